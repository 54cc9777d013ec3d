//! Unit tests of the pure parts: every validation case as one table, the recorded shapes
//! of auto-fixes and review cards, and the chunking of tenants.

use super::*;
use serde_json::json;

fn d(s: &str) -> rust_decimal::Decimal {
    s.parse().unwrap()
}

/// A complete order billed to a client: no finding against a client with room.
fn good_order() -> OrderRow {
    OrderRow {
        id: Uuid::new_v4(),
        tenant_id: Uuid::new_v4(),
        client_id: Some(Uuid::new_v4()),
        status: "new".into(),
        fee_amount: Some(d("450.00")),
        total_amount: Some(d("475.00")),
        tech_fee: Some(d("25.00")),
        payment_method: Some("bill".into()),
        property_address: Some("1 Main St".into()),
        property_city: Some("Springfield".into()),
        property_state: Some("IL".into()),
        property_zip: Some("62701".into()),
        borrower_name: Some("Bo".into()),
        borrower_email: Some("bo@example.com".into()),
        borrower_phone: None,
        property_contact_name: Some("Pat".into()),
        property_contact_phone: Some("555".into()),
        ..Default::default()
    }
}

fn client(limit: &str, balance: &str, active: bool) -> Client {
    Client {
        id: Uuid::new_v4(),
        is_active: active,
        credit_limit: d(limit),
        balance: d(balance),
    }
}

fn product(min: &str, max: &str) -> Product {
    Product {
        id: Uuid::new_v4(),
        min_price: Some(d(min)),
        max_price: Some(d(max)),
    }
}

struct Case {
    name: &'static str,
    edit: fn(&mut OrderRow),
    product: Option<(&'static str, &'static str)>,
    /// (credit limit, balance, active); None: no client.
    client: Option<(&'static str, &'static str, bool)>,
    codes: &'static [&'static str],
    /// (field, value after the fix).
    fixes: &'static [(&'static str, &'static str)],
    /// (pricing, credit, requirements) valid.
    valid: (bool, bool, bool),
}

const OK: (bool, bool, bool) = (true, true, true);
const ROOM: Option<(&str, &str, bool)> = Some(("10000", "0", true));

#[rustfmt::skip]
const CASES: &[Case] = &[
    Case { name: "complete billed order within credit", edit: |_| {}, product: None, client: ROOM, codes: &[], fixes: &[], valid: OK },
    Case { name: "total equal to the available credit is allowed (100 % use warns)", edit: |o| o.total_amount = Some(d("500.00")), product: None, client: Some(("1000.00", "500.00", true)), codes: &[CODE_CREDIT_HIGH_USE], fixes: &[], valid: OK },
    Case { name: "one cent over the available credit", edit: |o| o.total_amount = Some(d("500.01")), product: None, client: Some(("1000.00", "500.00", true)), codes: &[CODE_CREDIT_EXCEEDED], fixes: &[], valid: (true, false, true) },
    Case { name: "exactly 80 % use is no warning", edit: |o| o.total_amount = Some(d("500.00")), product: None, client: Some(("1000.00", "300.00", true)), codes: &[], fixes: &[], valid: OK },
    Case { name: "one cent above 80 % use warns", edit: |o| o.total_amount = Some(d("500.01")), product: None, client: Some(("1000.00", "300.00", true)), codes: &[CODE_CREDIT_HIGH_USE], fixes: &[], valid: OK },
    Case { name: "missing total is set to the fee and credit judges the fixed total", edit: |o| o.total_amount = None, product: None, client: Some(("400", "0", true)), codes: &[CODE_CREDIT_EXCEEDED], fixes: &[("total_amount", "450.00")], valid: (true, false, true) },
    Case { name: "total below the fee is raised to the fee", edit: |o| o.total_amount = Some(d("400.00")), product: None, client: ROOM, codes: &[], fixes: &[("total_amount", "450.00")], valid: OK },
    Case { name: "negative tech fee becomes zero", edit: |o| o.tech_fee = Some(d("-10.00")), product: None, client: ROOM, codes: &[], fixes: &[("tech_fee", "0.00")], valid: OK },
    Case { name: "zero fee is an error and fixes nothing", edit: |o| { o.fee_amount = Some(d("0")); o.total_amount = Some(d("-5")) }, product: None, client: Some(("1000", "0", true)), codes: &[CODE_FEE_NOT_POSITIVE], fixes: &[], valid: (false, true, true) },
    Case { name: "missing fee is an error", edit: |o| o.fee_amount = None, product: None, client: ROOM, codes: &[CODE_FEE_NOT_POSITIVE], fixes: &[], valid: (false, true, true) },
    Case { name: "fee below the product's range warns", edit: |_| {}, product: Some(("450.01", "500")), client: ROOM, codes: &[CODE_FEE_OUTSIDE_RANGE], fixes: &[], valid: OK },
    Case { name: "fee above the product's range warns", edit: |_| {}, product: Some(("400", "449.99")), client: ROOM, codes: &[CODE_FEE_OUTSIDE_RANGE], fixes: &[], valid: OK },
    Case { name: "fee on the range bounds does not warn", edit: |_| {}, product: Some(("450.00", "450.00")), client: ROOM, codes: &[], fixes: &[], valid: OK },
    Case { name: "billed order without a client", edit: |o| o.client_id = None, product: None, client: None, codes: &[CODE_CLIENT_MISSING], fixes: &[], valid: (true, false, true) },
    Case { name: "billed order of an inactive client (critical)", edit: |_| {}, product: None, client: Some(("10000", "0", false)), codes: &[CODE_CLIENT_INACTIVE], fixes: &[], valid: (true, false, true) },
    Case { name: "payment method bill matches case- and space-insensitively", edit: |o| o.payment_method = Some(" BILL ".into()), product: None, client: Some(("100", "0", true)), codes: &[CODE_CREDIT_EXCEEDED], fixes: &[], valid: (true, false, true) },
    Case { name: "orders not paid by bill skip the credit checks", edit: |o| o.payment_method = Some("card".into()), product: None, client: Some(("0", "99999", false)), codes: &[], fixes: &[], valid: OK },
    Case { name: "blank property address is an error", edit: |o| o.property_address = Some("  ".into()), product: None, client: ROOM, codes: &[CODE_ADDRESS_MISSING], fixes: &[], valid: (true, true, false) },
    Case { name: "neither borrower e-mail nor phone is an error", edit: |o| { o.borrower_email = None; o.borrower_phone = Some(String::new()) }, product: None, client: ROOM, codes: &[CODE_BORROWER_CONTACT_MISSING], fixes: &[], valid: (true, true, false) },
    Case { name: "a borrower phone alone is enough", edit: |o| { o.borrower_email = None; o.borrower_phone = Some("555".into()) }, product: None, client: ROOM, codes: &[], fixes: &[], valid: OK },
    Case { name: "each missing optional field is one warning", edit: |o| { o.property_city = None; o.property_state = Some(String::new()); o.property_zip = None; o.borrower_name = None; o.property_contact_phone = None }, product: None, client: ROOM, codes: &[CODE_CITY_MISSING, CODE_STATE_MISSING, CODE_ZIP_MISSING, CODE_BORROWER_NAME_MISSING, CODE_CONTACT_PHONE_MISSING], fixes: &[], valid: OK },
];

#[test]
fn every_validation_case_raises_exactly_its_findings_fixes_and_flags() {
    for case in CASES {
        let mut order = good_order();
        (case.edit)(&mut order);
        let p = case.product.map(|(min, max)| product(min, max));
        let c = case.client.map(|(l, b, a)| client(l, b, a));
        let v = validate(&order, p.as_ref(), c.as_ref());
        let codes: Vec<&str> = v.findings.iter().map(|f| f.code).collect();
        assert_eq!(codes, case.codes, "{}: codes", case.name);
        let fixes: Vec<(&str, rust_decimal::Decimal)> =
            v.auto_fixes.iter().map(|f| (f.field, f.to)).collect();
        let want: Vec<(&str, rust_decimal::Decimal)> =
            case.fixes.iter().map(|(f, to)| (*f, d(to))).collect();
        assert_eq!(fixes, want, "{}: fixes", case.name);
        let flags = (v.pricing_valid, v.credit_valid, v.requirements_valid);
        assert_eq!(flags, case.valid, "{}: validity flags", case.name);
        let blocked = case.valid != OK;
        let status = if blocked { "exception" } else { "validated" };
        assert_eq!(v.status(), status, "{}: status", case.name);
    }
}

#[test]
fn the_rule_table_raises_the_codes_the_agent_owns_each_once() {
    let codes: Vec<&str> = RULES.iter().map(|r| r.code).collect();
    assert_eq!(codes, ALL_CODES);
    let severities: Vec<(&str, Severity)> = RULES
        .iter()
        .filter(|r| r.severity.blocks())
        .map(|r| (r.code, r.severity))
        .collect();
    assert_eq!(
        severities,
        [
            (CODE_FEE_NOT_POSITIVE, Severity::Error),
            (CODE_CLIENT_MISSING, Severity::Error),
            (CODE_CLIENT_INACTIVE, Severity::Critical),
            (CODE_CREDIT_EXCEEDED, Severity::Error),
            (CODE_ADDRESS_MISSING, Severity::Error),
            (CODE_BORROWER_CONTACT_MISSING, Severity::Error),
        ]
    );
}

#[test]
fn auto_fix_is_recorded_with_decimal_strings() {
    let fix = AutoFix {
        field: "total_amount",
        from: Some(d("400.00")),
        to: d("450.00"),
        rule: "total_below_fee",
    };
    assert_eq!(
        fix.to_json(),
        json!({"field": "total_amount", "from": "400.00", "to": "450.00", "rule": "total_below_fee"})
    );
}

#[test]
fn review_card_payload_names_the_order_and_the_exception() {
    let t = ReviewTarget {
        order_id: Uuid::new_v4(),
        exception_id: Uuid::new_v4(),
        severity: "error".into(),
        exception_type: "credit".into(),
        code: CODE_CREDIT_EXCEEDED.into(),
        message: "too much".into(),
        client_id: None,
    };
    let p = review_card_payload(&t);
    assert_eq!(p["order_id"], json!(t.order_id));
    assert_eq!(p["exception_id"], json!(t.exception_id));
    assert!(review_card_title(&t).contains("too much"));
}

#[test]
fn tenants_are_chunked_up_to_a_batch_and_a_big_tenant_is_a_chunk_of_its_own() {
    let t: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let pending = [(t[0], 3), (t[1], 5), (t[2], 20), (t[3], 1)];
    assert_eq!(
        chunk_tenants(&pending, 10),
        vec![vec![t[0], t[1]], vec![t[2]], vec![t[3]]]
    );
}
