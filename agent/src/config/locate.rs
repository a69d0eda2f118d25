//! Finds which key a line and column of a YAML text belong to.
//!
//! serde-saphyr reports a line and column for syntax and shape errors (an unknown
//! key, a list where a string belongs) but not the key path. This scanner recovers
//! the path from indentation, which covers the block style configuration files
//! are written in, plus one-line flow mappings such as `{ name: data, path: /x }`.
//! It is a best effort for messages only; it never decides what a value means.

/// One key occurrence: where it starts and its full path (`peer.address`,
/// `replicated[1].name`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyAt {
    /// 1-based line.
    pub(crate) line: u64,
    /// 1-based column of the key's first character.
    pub(crate) column: u64,
    /// Path segments; sequence items are `[n]`.
    pub(crate) path: Vec<String>,
}

/// The key path at `line`/`column`: the last key that starts at or before that
/// position on that line, else the last key on an earlier line. Empty when the
/// position precedes every key.
pub(crate) fn key_path_at(text: &str, line: u64, column: u64) -> String {
    let keys = scan(text);
    let on_line = keys
        .iter()
        .rev()
        .find(|k| k.line == line && k.column <= column);
    let found = on_line.or_else(|| keys.iter().rev().find(|k| k.line < line));
    found.map(|k| join(&k.path)).unwrap_or_default()
}

/// Joins segments as `a.b[0].c`.
pub(crate) fn join(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if !seg.starts_with('[') && !out.is_empty() {
            out.push('.');
        }
        out.push_str(seg);
    }
    out
}

/// The first position of the key at `path` (joined form), for problems found
/// after parsing that have no span of their own.
pub(crate) fn position_of(text: &str, path: &str) -> Option<(u64, u64)> {
    scan(text)
        .into_iter()
        .find(|k| join(&k.path) == path)
        .map(|k| (k.line, k.column))
}

/// A block context: a key or a sequence item, and the column it starts at.
struct Frame {
    indent: usize,
    segment: String,
    /// Sequence items seen directly under this frame.
    items: usize,
    /// A key whose value starts on a later line (so `- ` at its own indent belongs
    /// to it, as in `replicated:\n- name: x`).
    open: bool,
}

/// Every key of the text, in order.
pub(crate) fn scan(text: &str) -> Vec<KeyAt> {
    let mut out = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut root_items = 0usize;
    for (index, raw_line) in text.lines().enumerate() {
        let line_no = u64::try_from(index).unwrap_or(u64::MAX).saturating_add(1);
        let line = strip_comment(raw_line);
        let chars: Vec<char> = line.chars().collect();
        let indent = chars.iter().take_while(|c| **c == ' ').count();
        if indent == chars.len() || line.trim() == "---" || line.trim() == "..." {
            continue;
        }
        let is_dash =
            |at: usize| chars.get(at) == Some(&'-') && chars.get(at + 1).is_none_or(|c| *c == ' ');
        let starts_item = is_dash(indent);
        while let Some(top) = stack.last() {
            let keeps = top.indent < indent || (starts_item && top.open && top.indent == indent);
            if keeps {
                break;
            }
            stack.pop();
        }
        let mut pos = indent;
        while is_dash(pos) {
            let counter = match stack.last_mut() {
                Some(parent) => &mut parent.items,
                None => &mut root_items,
            };
            let n = *counter;
            *counter += 1;
            if let Some(parent) = stack.last_mut() {
                parent.open = false;
            }
            stack.push(Frame {
                indent: pos,
                segment: format!("[{n}]"),
                items: 0,
                open: false,
            });
            pos += 1;
            while chars.get(pos) == Some(&' ') {
                pos += 1;
            }
        }
        let rest: String = chars.get(pos..).unwrap_or_default().iter().collect();
        if let Some(flow) = rest.strip_prefix('{') {
            // A sequence item written as a flow mapping: `- { name: x }`.
            let path: Vec<String> = stack.iter().map(|f| f.segment.clone()).collect();
            flow_keys(flow, pos + 1, line_no, &path, &mut out);
            continue;
        }
        let Some((key, value)) = split_key(&rest) else {
            continue;
        };
        let mut path: Vec<String> = stack.iter().map(|f| f.segment.clone()).collect();
        path.push(key.clone());
        out.push(KeyAt {
            line: line_no,
            column: u64::try_from(pos + 1).unwrap_or(u64::MAX),
            path: path.clone(),
        });
        let value_trimmed = value.trim_start();
        if let Some(flow) = value_trimmed.strip_prefix('{') {
            let flow_start = pos + key_prefix_len(&rest) + (value.len() - value_trimmed.len()) + 1;
            flow_keys(flow, flow_start, line_no, &path, &mut out);
        }
        stack.push(Frame {
            indent: pos,
            segment: key,
            items: 0,
            open: value.trim().is_empty(),
        });
    }
    out
}

/// Records the keys of a one-line flow mapping; `start` is the 0-based column of
/// the character after `{`.
fn flow_keys(flow: &str, start: usize, line: u64, parent: &[String], out: &mut Vec<KeyAt>) {
    let mut column = start;
    let mut depth = 0usize;
    let mut entry_start = Some(start);
    let mut entry = String::new();
    let mut quote: Option<char> = None;
    for c in flow.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '{' | '[') => depth += 1,
            (None, ']') => depth = depth.saturating_sub(1),
            (None, '}') if depth == 0 => break,
            (None, '}') => depth -= 1,
            (None, ',') if depth == 0 => {
                entry.clear();
                entry_start = Some(column + 1);
                column += 1;
                continue;
            }
            (None, ':') if depth == 0 => {
                if let Some(s) = entry_start.take() {
                    let lead = entry.chars().take_while(|c| *c == ' ').count();
                    let key = unquote(entry.trim());
                    if !key.is_empty() {
                        let mut path = parent.to_vec();
                        path.push(key);
                        out.push(KeyAt {
                            line,
                            column: u64::try_from(s + lead + 1).unwrap_or(u64::MAX),
                            path,
                        });
                    }
                }
            }
            _ => {}
        }
        if entry_start.is_some() {
            entry.push(c);
        }
        column += 1;
    }
}

/// Splits `key: value` (or `key:`) at the first colon followed by a space or the
/// end of the line, outside quotes.
fn split_key(rest: &str) -> Option<(String, String)> {
    let len = key_prefix_len(rest);
    if len == 0 {
        return None;
    }
    let key_part: String = rest.chars().take(len - 1).collect();
    let value: String = rest.chars().skip(len).collect();
    let key = unquote(key_part.trim());
    if key.is_empty() || key.starts_with(['{', '[', '?']) {
        return None;
    }
    Some((key, value))
}

/// Characters up to and including the key's colon, or 0 when the line is no key.
fn key_prefix_len(rest: &str) -> usize {
    let chars: Vec<char> = rest.chars().collect();
    let mut quote: Option<char> = None;
    for (i, c) in chars.iter().enumerate() {
        match (quote, *c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') if i == 0 => quote = Some(*c),
            (None, ':') if chars.get(i + 1).is_none_or(|n| *n == ' ') => return i + 1,
            (None, '{' | '[') if i == 0 => return 0,
            _ => {}
        }
    }
    0
}

fn unquote(s: &str) -> String {
    let inner = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| s.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')));
    inner.unwrap_or(s).to_owned()
}

/// Drops a `#` comment (a `#` at the start or after a space, outside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') if previous == ' ' || previous == '{' || previous == ',' => {
                quote = Some(c);
            }
            (None, '#') if previous == ' ' || previous == '\t' => return &line[..i],
            _ => {}
        }
        previous = c;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
node: a # comment
peer:
  name: b
  address: \"1.2.3.4:5\"
identity: { certificate: /c, key: /k }
replicated:
  - name: data
    path: /srv/data
  - { name: logs, path: /srv/logs }
other:
- x: 1
";

    #[test]
    fn paths_follow_indentation_sequences_and_flow_mappings() {
        let paths: Vec<String> = scan(TEXT).iter().map(|k| join(&k.path)).collect();
        assert_eq!(
            paths,
            [
                "node",
                "peer",
                "peer.name",
                "peer.address",
                "identity",
                "identity.certificate",
                "identity.key",
                "replicated",
                "replicated[0].name",
                "replicated[0].path",
                "replicated[1].name",
                "replicated[1].path",
                "other",
                "other[0].x",
            ]
        );
    }

    #[test]
    fn positions_map_back_to_keys() {
        assert_eq!(key_path_at(TEXT, 4, 12), "peer.address");
        assert_eq!(key_path_at(TEXT, 5, 36), "identity.key");
        assert_eq!(key_path_at(TEXT, 5, 16), "identity.certificate");
        assert_eq!(key_path_at(TEXT, 9, 30), "replicated[1].path");
        assert_eq!(position_of(TEXT, "replicated[0].path"), Some((8, 5)));
        assert_eq!(position_of(TEXT, "identity.key"), Some((5, 30)));
    }
}
