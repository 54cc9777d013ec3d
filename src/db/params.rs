//! Statement parameters with their PostgreSQL types ([`Param`], [`PgTyped`]): what an
//! unnamed statement needs to name its parameters' types up front.

use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

/// A statement parameter: a value tokio-postgres can encode, and the PostgreSQL type it is
/// sent as. An unnamed statement (Parse, Bind, Execute in one round trip, nothing kept on
/// the server) must name its parameters' types up front, as the server has not described
/// them: the type here is the one the server inferred when the statement was prepared, so
/// the same SQL means the same thing on both paths.
pub trait Param: ToSql + Sync {
    /// The PostgreSQL type this value is sent as.
    fn param_type(&self) -> Type;
    /// The value as tokio-postgres's parameter type.
    fn as_sql(&self) -> &(dyn ToSql + Sync);
}

/// A Rust type with one PostgreSQL type (and its array type), for [`Param`] of the type
/// itself, of `Option`s (NULL of that type) and of vectors and slices (arrays).
pub trait PgTyped {
    const TYPE: Type;
    const ARRAY: Type;
}

macro_rules! pg_typed {
    ($($t:ty => $ty:ident, $arr:ident;)*) => {$(
        impl PgTyped for $t {
            const TYPE: Type = Type::$ty;
            const ARRAY: Type = Type::$arr;
        }
        impl Param for $t {
            fn param_type(&self) -> Type {
                Type::$ty
            }
            fn as_sql(&self) -> &(dyn ToSql + Sync) {
                self
            }
        }
    )*};
}

pg_typed! {
    bool => BOOL, BOOL_ARRAY;
    i16 => INT2, INT2_ARRAY;
    i32 => INT4, INT4_ARRAY;
    i64 => INT8, INT8_ARRAY;
    f32 => FLOAT4, FLOAT4_ARRAY;
    f64 => FLOAT8, FLOAT8_ARRAY;
    String => TEXT, TEXT_ARRAY;
    &str => TEXT, TEXT_ARRAY;
    Uuid => UUID, UUID_ARRAY;
    chrono::DateTime<chrono::Utc> => TIMESTAMPTZ, TIMESTAMPTZ_ARRAY;
    chrono::NaiveDate => DATE, DATE_ARRAY;
    serde_json::Value => JSONB, JSONB_ARRAY;
    rust_decimal::Decimal => NUMERIC, NUMERIC_ARRAY;
}

impl<T: PgTyped> PgTyped for Option<T> {
    const TYPE: Type = T::TYPE;
    const ARRAY: Type = T::ARRAY;
}

impl<T: PgTyped + ToSql + Sync> Param for Option<T> {
    fn param_type(&self) -> Type {
        T::TYPE
    }
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        self
    }
}

impl<T: PgTyped + ToSql + Sync> Param for Vec<T> {
    fn param_type(&self) -> Type {
        T::ARRAY
    }
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        self
    }
}

impl<T: PgTyped + ToSql + Sync> Param for &[T] {
    fn param_type(&self) -> Type {
        T::ARRAY
    }
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        self
    }
}

impl<T: PgTyped + ToSql + Sync> Param for Option<Vec<T>> {
    fn param_type(&self) -> Type {
        T::ARRAY
    }
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        self
    }
}

impl<T: Param> Param for &T {
    fn param_type(&self) -> Type {
        (**self).param_type()
    }
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        (**self).as_sql()
    }
}
