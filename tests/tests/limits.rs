//! The limits table of docs/ARCHITECTURE.md against the code: every bound the table names is a
//! constant in the file it names, with the value it states; and every `*_MAX` constant of the
//! program's crates is in the table. Then the bounds a user meets first, exceeded through the
//! program: rounds, providers, directory size, block size, events per transcript, line length
//! (frame size is in acp.rs, prompt size in acp.rs, body sizes in remote.rs). Each is a clear
//! error with its code, and nothing is written.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the repository").to_path_buf()
}

/// The rows of the `## Limits` table: (bound, value, where).
fn table() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(repo().join("docs/ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let section = text.split("\n## Limits\n").nth(1).expect("a Limits section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter(|line| line.starts_with("| ") && !line.starts_with("| bound") && !line.starts_with("|--"))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
            assert!(cells.len() >= 4, "a row of four cells: {line}");
            (cells[0].to_owned(), cells[1].to_owned(), cells[2].to_owned())
        })
        .collect()
}

/// The constants a bound cell names: the identifiers in backticks (`stripe::X` is `X`).
fn names(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(|name| name.rsplit("::").next().unwrap_or(name).to_owned())
        .filter(|name| name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .collect()
}

/// `runtime/session/shell.rs` is `runtime/src/session/shell.rs`.
fn source(path: &str) -> PathBuf {
    let (krate, rest) = path.split_once('/').expect("crate/path");
    repo().join(krate).join("src").join(rest)
}

/// The expression a constant is defined with in `file`, if it is defined there.
fn definition(file: &str, name: &str) -> Option<String> {
    let start = file.find(&format!("const {name}:"))?;
    let after = &file[start..];
    let equals = after.find('=')?;
    let end = after.find(';')?;
    Some(after[equals + 1..end].split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The value of an integer expression of literals, `+ - * <<` and parentheses; `None` for
/// anything else (a constant defined from others).
fn evaluate(expression: &str) -> Option<i128> {
    fn sum(tokens: &[String], at: &mut usize) -> Option<i128> {
        let mut value = shift(tokens, at)?;
        while let Some(op) = tokens.get(*at).filter(|t| *t == "+" || *t == "-").cloned() {
            *at += 1;
            let right = shift(tokens, at)?;
            value = if op == "+" { value + right } else { value - right };
        }
        Some(value)
    }
    fn shift(tokens: &[String], at: &mut usize) -> Option<i128> {
        let mut value = product(tokens, at)?;
        while tokens.get(*at).is_some_and(|t| t == "<<") {
            *at += 1;
            value <<= product(tokens, at)?;
        }
        Some(value)
    }
    fn product(tokens: &[String], at: &mut usize) -> Option<i128> {
        let mut value = atom(tokens, at)?;
        while tokens.get(*at).is_some_and(|t| t == "*") {
            *at += 1;
            value *= atom(tokens, at)?;
        }
        Some(value)
    }
    fn atom(tokens: &[String], at: &mut usize) -> Option<i128> {
        let token = tokens.get(*at)?.clone();
        *at += 1;
        if token == "(" {
            let value = sum(tokens, at)?;
            (tokens.get(*at)? == ")").then_some(())?;
            *at += 1;
            return Some(value);
        }
        token.replace('_', "").trim_end_matches("u64").trim_end_matches("usize").parse().ok()
    }
    let mut tokens = Vec::new();
    let mut chars = expression.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' => {}
            '<' if chars.peek() == Some(&'<') => {
                chars.next();
                tokens.push("<<".to_owned());
            }
            '+' | '-' | '*' | '(' | ')' => tokens.push(c.to_string()),
            c if c.is_ascii_alphanumeric() || c == '_' => {
                let mut word = c.to_string();
                while let Some(&next) = chars.peek().filter(|n| n.is_ascii_alphanumeric() || **n == '_') {
                    word.push(next);
                    chars.next();
                }
                tokens.push(word);
            }
            _ => return None,
        }
    }
    let mut at = 0;
    let value = sum(&tokens, &mut at)?;
    (at == tokens.len()).then_some(value)
}

/// The number a value cell states, in the constant's unit: sizes in bytes, days in the
/// constant's milliseconds. `None` for a cell that is not a number.
fn stated(cell: &str, name: &str) -> Option<i128> {
    let cell = cell.split(" (").next().unwrap_or(cell).trim();
    if cell == "2^53 − 1" {
        return Some((1 << 53) - 1);
    }
    if let Some((left, right)) = cell.split_once(" + ") {
        return Some(stated(left, name)? + stated(right, name)?);
    }
    let (number, unit) = cell.split_once(' ').unwrap_or((cell, ""));
    let number: i128 = number.replace(',', "").trim_end_matches('%').parse().ok()?;
    let scale = match unit {
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        "GiB" => 1024 * 1024 * 1024,
        "days" if name.ends_with("_MS") => 86_400_000,
        "s" if name.ends_with("_MS") => 1_000,
        _ => 1,
    };
    Some(number * scale)
}

#[test]
fn every_bound_in_the_limits_table_is_a_constant_with_the_stated_value() {
    let rows = table();
    assert!(rows.len() > 100, "the table has {} rows", rows.len());
    let mut checked = 0;
    for (bound, value, place) in &rows {
        let names = names(bound);
        if names.is_empty() {
            continue;
        }
        let files: Vec<(String, String)> = place
            .split(", ")
            .map(|path| {
                let file = std::fs::read_to_string(source(path)).unwrap_or_else(|e| panic!("{bound}: {path}: {e}"));
                (path.to_owned(), file)
            })
            .collect();
        // One value per name (`A` / `B` is `1 / 2`; `A` × `B` is `1 × 2`).
        let values: Vec<&str> = if names.len() == 1 {
            vec![value.as_str()]
        } else {
            value.split(" / ").flat_map(|v| v.split(" × ")).collect()
        };
        assert_eq!(values.len(), names.len(), "{bound}: one value per name in {value:?}");
        for (name, value) in names.iter().zip(values) {
            let expression = files
                .iter()
                .find_map(|(_, file)| definition(file, name))
                .unwrap_or_else(|| panic!("{name} is not defined in {place}"));
            // Values of another unit than the constant's (a size in characters of a byte
            // constant, say) are stated with it; a constant defined from others is checked
            // where those are.
            if let (Some(actual), Some(expected)) = (evaluate(&expression), stated(value, name)) {
                assert_eq!(actual, expected, "{name} = {expression}, the table says {value}");
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "only {checked} values checked");
}

#[test]
fn every_max_constant_of_the_program_is_in_the_limits_table() {
    // Each name with the files its row names (two files may each have a bound of one name).
    let named: BTreeSet<(String, PathBuf)> = table()
        .into_iter()
        .flat_map(|(bound, _, place)| {
            let files: Vec<PathBuf> = place.split(", ").map(source).collect();
            names(&bound)
                .into_iter()
                .flat_map(move |name| files.clone().into_iter().map(move |file| (name.clone(), file)))
        })
        .collect();
    let mut missing = Vec::new();
    for krate in ["agent", "runtime", "memory", "transcripts"] {
        let mut stack = vec![repo().join(krate).join("src")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") || path.file_name().is_some_and(|n| n == "tests.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("read");
                // Constants of test modules are not bounds of the program.
                let program = text.split("#[cfg(test)]").next().unwrap_or(&text);
                for piece in program.split("const ").skip(1) {
                    let name: String = piece
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    if name.ends_with("_MAX") && !named.contains(&(name.clone(), path.clone())) {
                        missing.push(format!("{name} ({})", path.strip_prefix(repo()).unwrap_or(&path).display()));
                    }
                }
            }
        }
    }
    assert!(missing.is_empty(), "bounds missing from the limits table of docs/ARCHITECTURE.md: {missing:?}");
}

#[test]
fn the_value_parser_reads_the_forms_the_table_uses() {
    assert_eq!(stated("1 MiB + 8 KiB", "X"), Some(1024 * 1024 + 8 * 1024));
    assert_eq!(stated("16,384 (64 MiB)", "X"), Some(16_384));
    assert_eq!(stated("90 days", "X_MS"), Some(90 * 86_400_000));
    assert_eq!(stated("2^53 − 1", "X"), Some((1 << 53) - 1));
    assert_eq!(stated("a file name", "X"), None);
    assert_eq!(evaluate("(1 << 53) - 1"), Some((1 << 53) - 1));
    assert_eq!(evaluate("8 * 1024 * 1024"), Some(8 * 1024 * 1024));
    assert_eq!(evaluate("10_000_000"), Some(10_000_000));
    assert_eq!(evaluate("if A > B { A } else { B }"), None);
    assert_eq!(names("`A` / `B`"), ["A", "B"]);
    assert_eq!(names("`stripe::PAYLOAD_BYTES_MAX`"), ["PAYLOAD_BYTES_MAX"]);
}

/// A bench-style provider named `id`, in the directory format.
fn provider(id: &str) -> String {
    format!(
        "[[provider]]\nid = \"{id}\"\nname = \"{id}\"\nintent_types = [\"bench.item\"]\n\
         reference_price = {{ amount = \"1.00\", currency = \"USD\" }}\nfloor_percent = 60\nconcession = \"steady\"\n\
         concession_percent = 10\nlatency_ms = {{ base = 20, jitter = 30 }}\n\
         failures = {{ timeout_percent = 0, refusal_percent = 0, unreachable_percent = 0 }}\n"
    )
}

#[test]
fn a_policy_asking_for_more_rounds_than_rounds_max_is_refused_before_anything_is_written() {
    let home = common::Home::new();
    let policy = home.write_file("rounds.toml", b"format = \"pactum-policy/1\"\nrounds_max = 33\n");
    let policy = policy.display().to_string();
    let output = home.run(&[
        "negotiate",
        "weather.data",
        "--max-price",
        "0.10",
        "--currency",
        "USD",
        "--policy",
        &policy,
        "--yes",
    ]);
    let message = common::assert_fails(&output, 2, "POLICY_INVALID");
    assert!(message.contains("1 to 32"), "{message}");
    assert!(!home.default_db().exists(), "nothing written");
}

#[test]
fn a_directory_over_providers_max_or_over_its_size_is_refused() {
    let home = common::Home::new();
    let mut many = "format = \"pactum-directory/1\"\n".to_owned();
    for index in 0..65 {
        many.push_str(&provider(&format!("p{index}")));
    }
    let path = home.write_file("many.toml", many.as_bytes()).display().to_string();
    let message = common::assert_fails(&home.run(&["--directory", &path, "providers", "list"]), 2, "DIRECTORY_INVALID");
    assert!(message.contains("65 providers; at most 64"), "{message}");
    // 64 is within the bound.
    let mut enough = "format = \"pactum-directory/1\"\n".to_owned();
    for index in 0..64 {
        enough.push_str(&provider(&format!("p{index}")));
    }
    let path = home.write_file("enough.toml", enough.as_bytes()).display().to_string();
    common::assert_ok(&home.run(&["--directory", &path, "providers", "list"]));
    let mut large = format!("format = \"pactum-directory/1\"\n{}", provider("p0"));
    while large.len() <= 1024 * 1024 {
        large.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    let path = home.write_file("large.toml", large.as_bytes()).display().to_string();
    common::assert_fails(&home.run(&["--directory", &path, "providers", "list"]), 2, "DIRECTORY_INVALID");
    assert!(!home.default_db().exists(), "nothing written");
}

#[test]
fn a_block_limit_over_block_chars_max_and_content_over_a_blocks_limit_are_refused() {
    let home = common::Home::new();
    let message = common::assert_fails(
        &home.run(&["memory", "create", "notes", "--limit", "1000001"]),
        2,
        "MEMORY_INPUT_INVALID",
    );
    assert!(message.contains("1000000"), "{message}");
    common::assert_ok(&home.run(&["memory", "create", "small", "--limit", "10"]));
    common::assert_ok(&home.run(&["memory", "set", "small", "0123456789"]));
    let message =
        common::assert_fails(&home.run(&["memory", "set", "small", "0123456789!"]), 2, "MEMORY_LIMIT_EXCEEDED");
    assert!(message.contains("at most 10 characters"), "{message}");
    let shown = common::json(&home.run(&["memory", "show", "small", "--json"]));
    assert_eq!(shown["content"], "0123456789", "the refused write left the block as it was: {shown}");
    assert!(common::stdout(&home.run(&["memory", "list"])).lines().all(|line| !line.starts_with("notes")));
}

#[test]
fn a_transcript_over_stream_events_max_or_with_a_line_over_the_limit_is_refused() {
    let home = common::Home::new();
    let sample = std::fs::read_to_string(home.sample_file()).expect("sample");
    let (header, events) = sample.split_once('\n').expect("a header line");
    let claimed = header.replace("\"event_count\":7", "\"event_count\":10000001");
    assert_ne!(claimed, header);
    let path = home.write_file("claimed.jsonl", format!("{claimed}\n{events}").as_bytes()).display().to_string();
    let message = common::assert_fails(&home.run(&["transcript", "verify", &path]), 1, "FILE_MALFORMED");
    assert!(message.contains("from 0 to 10000000"), "{message}");
    let long = format!("{header}\n{{\"pad\":\"{}\"}}\n", "x".repeat(1024 * 1024 + 9 * 1024));
    let path = home.write_file("long.jsonl", long.as_bytes()).display().to_string();
    let message = common::assert_fails(&home.run(&["transcript", "verify", &path]), 1, "FILE_MALFORMED");
    assert!(message.contains("line is longer than 1056768 bytes"), "{message}");
    common::assert_fails(&home.run(&["transcript", "import", &path]), 1, "FILE_MALFORMED");
    let listed = common::stdout(&home.run(&["transcript", "list"]));
    assert!(listed.starts_with("no transcripts"), "nothing imported: {listed}");
}
