//! Transitional: the argument structs that `orders`, `status` and `prune` still take
//! (until they get plain option structs of their own); everything else of the command line
//! lives in `commands`.

pub(crate) use crate::commands::ProcessOrdersArgs;
