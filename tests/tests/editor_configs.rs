//! The shipped editor configurations are well-formed and launch `pactum acp`.

use std::path::PathBuf;

use serde_json::Value;

const PLACEHOLDER: &str = "/ABSOLUTE/PATH/TO/pactum";

fn read(relative: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../editor-configs").join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json(relative: &str) -> Value {
    serde_json::from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative} is not JSON: {e}"))
}

#[test]
fn zed_uses_a_custom_agent_server() {
    let server = &json("zed/settings.json")["agent_servers"]["Pactum"];
    assert_eq!(server["type"], "custom", "current Zed requires type custom");
    assert_eq!(server["command"], PLACEHOLDER);
    assert_eq!(server["args"], serde_json::json!(["acp"]));
}

#[test]
fn jetbrains_lists_the_agent_server() {
    let server = &json("jetbrains/acp.json")["agent_servers"]["Pactum"];
    assert_eq!((server["command"].as_str(), server["args"].clone()), (Some(PLACEHOLDER), serde_json::json!(["acp"])));
}

#[test]
fn acpx_names_the_agent_pactum() {
    assert_eq!(json("acpx/config.json")["agents"]["pactum"]["argv"], serde_json::json!([PLACEHOLDER, "acp"]));
}

#[test]
fn neovim_configs_launch_pactum_acp() {
    for file in ["neovim/avante.lua", "neovim/codecompanion.lua"] {
        let text = read(file);
        assert!(text.contains(PLACEHOLDER) && text.contains("\"acp\""), "{file} launches `pactum acp`");
        let opens = text.matches(['(', '{']).count();
        let closes = text.matches([')', '}']).count();
        assert_eq!(opens, closes, "{file}: brackets balance");
    }
    assert!(read("neovim/avante.lua").contains("acp_providers"));
    assert!(read("neovim/codecompanion.lua").contains("acp = {"));
}
