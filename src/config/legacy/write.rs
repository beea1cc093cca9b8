//! The TOML import-legacy writes: lines, wrapped comments, quoted strings.

/// Comment text with control characters escaped (a raw one would end the comment or make
/// the TOML invalid).
pub(super) fn comment_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A command as shown in a comment: at most 300 characters.
pub(super) fn shown(s: &str) -> String {
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

pub(super) fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[derive(Default)]
pub(super) struct Out(pub(super) String);

impl Out {
    pub(super) fn line(&mut self, s: &str) {
        self.0.push_str(s);
        self.0.push('\n');
    }

    /// `# text`, wrapped at about 88 columns.
    pub(super) fn comment(&mut self, text: &str) {
        let mut line = String::from("#");
        for word in comment_safe(text).split(' ') {
            if line.len() > 2 && line.len() + word.len() > 88 {
                self.line(&line);
                line = String::from("#");
            }
            line.push(' ');
            line.push_str(word);
        }
        self.line(&line);
    }
}
