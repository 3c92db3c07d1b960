//! Where constellations live: `--constellation <name|path>` resolution.

use std::path::PathBuf;

use crate::failure::Failure;

/// The constellation used when none is named.
pub const DEFAULT_CONSTELLATION: &str = "default";
/// Longest constellation name.
const NAME_BYTES_MAX: usize = 64;

/// The directory holding Pactum's data: `$PACTUM_HOME`, else `$XDG_DATA_HOME/pactum`, else
/// `~/.local/share/pactum`.
pub fn data_home() -> Result<PathBuf, Failure> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(home) = non_empty("PACTUM_HOME") {
        return Ok(home);
    }
    if let Some(data) = non_empty("XDG_DATA_HOME") {
        return Ok(data.join("pactum"));
    }
    if let Some(home) = non_empty("HOME") {
        return Ok(home.join(".local").join("share").join("pactum"));
    }
    Err(Failure::new(
        "NO_DATA_HOME",
        "cannot find a place for constellations: set PACTUM_HOME (or XDG_DATA_HOME or HOME), or pass --constellation <path>",
    ))
}

/// Resolves `--constellation`: a value with a `/` or ending in `.db` is a path; anything else is
/// a name, stored as `<data home>/constellations/<name>.db`.
pub fn resolve(value: Option<&str>) -> Result<PathBuf, Failure> {
    let value = value.unwrap_or(DEFAULT_CONSTELLATION);
    if value.contains(std::path::MAIN_SEPARATOR) || value.contains('/') || value.ends_with(".db") {
        return Ok(PathBuf::from(value));
    }
    let valid = !value.is_empty()
        && value.len() <= NAME_BYTES_MAX
        && !value.starts_with('.')
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid {
        return Err(Failure::new(
            "BAD_CONSTELLATION_NAME",
            format!(
                "{value:?} is not a constellation name (1-{NAME_BYTES_MAX} letters, digits, '-', '_', '.'; use a path with '/' for a file)"
            ),
        ));
    }
    Ok(data_home()?.join("constellations").join(format!("{value}.db")))
}
