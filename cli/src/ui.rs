//! Output for people (aligned tables, colours on a terminal) or one JSON document.

use std::io::IsTerminal;

#[derive(Debug, Clone, Copy)]
pub enum Colour {
    Red,
    Green,
    Yellow,
    Bold,
    Dim,
}

pub struct Ui {
    pub json: bool,
    colour: bool,
}

impl Ui {
    pub fn new(json: bool) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Ui { json, colour: !json && !no_color && std::io::stdout().is_terminal() }
    }

    /// A line for people; nothing with `--json`.
    pub fn line(&self, text: impl AsRef<str>) {
        if !self.json {
            println!("{}", text.as_ref());
        }
    }

    pub fn paint(&self, colour: Colour, text: &str) -> String {
        if !self.colour {
            return text.to_owned();
        }
        let code = match colour {
            Colour::Red => "31",
            Colour::Green => "32",
            Colour::Yellow => "33",
            Colour::Bold => "1",
            Colour::Dim => "2",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    /// Rows aligned in columns (the first row is the header, printed bold); nothing with `--json`.
    /// `paint` colours a cell after it is padded, so colours do not break the alignment.
    pub fn table(&self, rows: &[Vec<String>], paint: impl Fn(usize, usize, &str) -> Option<Colour>) {
        if self.json || rows.is_empty() {
            return;
        }
        let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
            .collect();
        for (r, row) in rows.iter().enumerate() {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                let last = c + 1 == row.len();
                let padded =
                    if last { cell.clone() } else { format!("{cell}{}", " ".repeat(widths[c] - cell.chars().count())) };
                let colour = if r == 0 { Some(Colour::Bold) } else { paint(r, c, cell) };
                line.push_str(&match colour {
                    Some(colour) => self.paint(colour, &padded),
                    None => padded,
                });
                if !last {
                    line.push_str("  ");
                }
            }
            println!("{}", line.trim_end());
        }
    }
}

pub fn print_json(doc: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(doc).unwrap_or_else(|_| "{}".into()));
}

/// How a value is shown: never the value, only its length.
pub fn mask(value: &str) -> String {
    format!("•••• ({} characters)", value.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masked_value_shows_its_length_only() {
        assert_eq!(mask("hunter2"), "•••• (7 characters)");
        assert!(!mask("hunter2").contains("hunter"));
    }
}
