//! specs/failure-codes.toml is the source of truth for the PACT failure taxonomy; the Rust
//! table must list the same codes, in the same order, with the same attributes.

use pactum_runtime::FailureCode;

#[test]
fn the_failure_table_matches_the_spec() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../specs/failure-codes.toml");
    let spec: toml::Table = std::fs::read_to_string(path).expect("spec").parse().expect("TOML");
    let listed: Vec<[String; 6]> = spec["failure"]
        .as_array()
        .expect("failure list")
        .iter()
        .map(|entry| {
            ["code", "name", "stage", "fault_domain", "terminality", "description"]
                .map(|field| entry[field].as_str().unwrap_or_else(|| panic!("{field} missing")).to_owned())
        })
        .collect();
    let coded: Vec<[String; 6]> = FailureCode::ALL
        .iter()
        .map(|code| {
            [
                code.code().to_owned(),
                code.name(),
                code.stage().as_str().to_owned(),
                code.fault_domain().as_str().to_owned(),
                code.terminality().as_str().to_owned(),
                code.description().to_owned(),
            ]
        })
        .collect();
    assert_eq!(coded, listed);
}

#[test]
fn families_follow_the_taxonomy() {
    for code in FailureCode::ALL {
        let family = &code.code()[5..6];
        let digits_ok = code.code().len() == 8 && code.code()[5..].bytes().all(|b| b.is_ascii_digit());
        assert!(code.code().starts_with("PACT-") && digits_ok, "{code}");
        match family {
            "1" => assert_eq!(code.fault_domain().as_str(), "policy", "{code}"),
            "2" => assert_eq!(code.fault_domain().as_str(), "identity", "{code}"),
            "4" => assert_eq!(code.stage().as_str(), "settlement", "{code}"),
            "3" | "5" => {}
            other => panic!("{code}: unknown family {other}"),
        }
        // 1xx and 2xx are terminal by definition.
        if family == "1" || family == "2" {
            assert_eq!(code.terminality().as_str(), "terminal", "{code}");
        }
    }
}
