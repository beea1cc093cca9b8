//! PortSentry 1.2 ran `KILL_RUN_CMD` and `KILL_ROUTE` with `system(3)`, that is `/bin/sh -c`
//! on the text with its tokens replaced. This reads such a text the way sh would, as far
//! as that can be done without a shell: words with their quotes and backslashes, commands
//! joined by `&&` or `;`. What else a shell would do (pipes, redirections to files,
//! expansions, globs, `||`, background jobs, subshells) is reported, never imitated.
//! Pure, linear in the text, and total: any text gives a `Script` or a reason.

/// Replaced by PortSentry before the shell saw the text, so literal in any quoting.
pub const TOKENS: [&str; 3] = ["$TARGET$", "$PORT$", "$MODE$"];

/// Reserved words: only shell syntax when unquoted and in command position.
const KEYWORDS: [&str; 21] = [
    "if", "then", "else", "elif", "fi", "case", "esac", "for", "while", "until", "do", "done",
    "in", "function", "select", "time", "{", "}", "!", "[[", "]]",
];

/// Builtins with no program of their own (or none that could do the same from outside).
const BUILTINS: [&str; 31] = [
    "cd", "exit", "export", "set", "unset", "eval", "exec", ".", "source", "read", "wait", "trap",
    "ulimit", "umask", "shift", "alias", "unalias", "return", "break", "continue", "readonly",
    "local", "hash", "type", "getopts", "times", "command", "jobs", "fg", "bg", "let",
];

/// How one command follows the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sep {
    /// `&&`: only if the previous one succeeded.
    And,
    /// `;`: whatever the previous one did.
    Semi,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The words with quotes removed, or what in this command needs a shell.
    pub argv: Result<Vec<String>, NeedsShell>,
    /// The command as written (for messages).
    pub text: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Script {
    pub commands: Vec<Command>,
    /// `separators[i]` comes between `commands[i]` and `commands[i + 1]`.
    pub separators: Vec<Sep>,
    /// Output sent to /dev/null (or stderr to stdout) was dropped: portsentry discards a
    /// command's output anyway.
    pub discarded_output: bool,
}

/// What a shell would have done that a list of argv commands cannot. Phrased to follow
/// "needs a shell for".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NeedsShell {
    #[error("an unbalanced {0} quote")]
    Unbalanced(char),
    #[error("a backslash at the very end")]
    DanglingBackslash,
    #[error("control characters")]
    Control,
    #[error("a command substitution ({0})")]
    Substitution(&'static str),
    #[error("a subshell ('(' or ')')")]
    Subshell,
    #[error("'||' (run the next command only when one fails)")]
    Or,
    #[error("'&' (run in the background)")]
    Background,
    #[error("an empty command ({0})")]
    Empty(&'static str),
    #[error("a here-document ('<<')")]
    HereDoc,
    #[error("a pipe ('|')")]
    Pipe,
    #[error("a redirection ('{0}')")]
    Redirect(String),
    #[error("the shell variable '{0}'")]
    Variable(String),
    #[error("a glob ('{0}') the shell would expand to file names")]
    Glob(char),
    #[error("a brace expansion ('{0}')")]
    Brace(String),
    #[error("'~' (a home directory)")]
    Tilde,
    #[error("an environment assignment ('{0}')")]
    Assignment(String),
    #[error("'{0}', which is shell syntax")]
    Keyword(String),
    #[error("'{0}', a shell builtin")]
    Builtin(String),
}

#[derive(Debug, Default)]
struct Word {
    text: String,
    /// Any part quoted or escaped.
    quoted: bool,
    /// The unquoted characters before the first quote or escape (assignments, io numbers).
    lead: String,
    /// Every unquoted character, in order (glob and brace checks).
    unquoted: String,
}

struct Parser {
    chars: Vec<char>,
    i: usize,
    word: Option<Word>,
    words: Vec<Word>,
    /// The first thing in the current command that needs a shell.
    problem: Option<NeedsShell>,
    cmd_start: usize,
    script: Script,
}

/// Reads `text` as sh would split it into commands and words.
///
/// # Errors
/// `NeedsShell` for what only a shell could run.
pub fn parse(text: &str) -> Result<Script, NeedsShell> {
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return Err(NeedsShell::Control);
    }
    let mut p = Parser {
        chars: text.chars().collect(),
        i: 0,
        word: None,
        words: Vec::new(),
        problem: None,
        cmd_start: 0,
        script: Script::default(),
    };
    p.run()?;
    Ok(p.script)
}

impl Parser {
    fn peek(&self, k: usize) -> Option<char> {
        self.chars.get(self.i + k).copied()
    }

    fn word(&mut self) -> &mut Word {
        self.word.get_or_insert_with(Word::default)
    }

    /// An unquoted character of the current word.
    fn plain(&mut self, c: char) {
        let w = self.word();
        w.text.push(c);
        w.unquoted.push(c);
        if !w.quoted {
            w.lead.push(c);
        }
    }

    fn quoted(&mut self, s: &str) {
        let w = self.word();
        w.text.push_str(s);
        w.quoted = true;
    }

    fn flag(&mut self, p: NeedsShell) {
        self.problem.get_or_insert(p);
    }

    fn end_word(&mut self) {
        let Some(w) = self.word.take() else { return };
        let u = &w.unquoted;
        if let Some(open) = u.find('[') {
            if u[open..].contains(']') {
                self.flag(NeedsShell::Glob('['));
            }
        }
        if let Some(open) = u.find('{') {
            if let Some(close) = u[open..].find('}') {
                let inside = &u[open..open + close];
                if inside.contains(',') || inside.contains("..") {
                    self.flag(NeedsShell::Brace(w.text.clone()));
                }
            }
        }
        self.words.push(w);
    }

    /// Ends the current command at `self.i` (before the separator, if any).
    fn end_command(&mut self, sep: Option<Sep>) -> Result<(), NeedsShell> {
        self.end_word();
        let text: String = self.chars[self.cmd_start..self.i.min(self.chars.len())]
            .iter()
            .collect::<String>()
            .trim()
            .to_string();
        let words = std::mem::take(&mut self.words);
        let problem = self.problem.take();
        if words.is_empty() && problem.is_none() {
            return match (sep, self.script.separators.last()) {
                (Some(Sep::And), _) => Err(NeedsShell::Empty("nothing before '&&'")),
                (Some(Sep::Semi), _) => Err(NeedsShell::Empty("nothing before ';'")),
                // `a;` is fine in sh: the last separator just ends the list.
                (None, Some(Sep::Semi)) => {
                    self.script.separators.pop();
                    Ok(())
                }
                (None, Some(Sep::And)) => Err(NeedsShell::Empty("nothing after '&&'")),
                (None, None) => Ok(()),
            };
        }
        let argv = match problem.or_else(|| command_word_problem(&words)) {
            Some(p) => Err(p),
            None => Ok(words.into_iter().map(|w| w.text).collect()),
        };
        self.script.commands.push(Command { argv, text });
        if let Some(s) = sep {
            self.script.separators.push(s);
        }
        Ok(())
    }

    fn run(&mut self) -> Result<(), NeedsShell> {
        while let Some(c) = self.peek(0) {
            match c {
                ' ' | '\t' => {
                    self.end_word();
                    self.i += 1;
                }
                '\'' => {
                    let start = self.i + 1;
                    let len = self.chars[start..]
                        .iter()
                        .position(|&c| c == '\'')
                        .ok_or(NeedsShell::Unbalanced('\''))?;
                    let s: String = self.chars[start..start + len].iter().collect();
                    self.quoted(&s);
                    self.i = start + len + 1;
                }
                '"' => self.double_quoted()?,
                '\\' => {
                    let n = self.peek(1).ok_or(NeedsShell::DanglingBackslash)?;
                    self.quoted(&n.to_string());
                    self.i += 2;
                }
                '$' => {
                    if let Some(tok) = self.dollar()? {
                        self.plain_str(tok);
                    }
                }
                '`' => return Err(NeedsShell::Substitution("backticks")),
                '|' if self.peek(1) == Some('|') => return Err(NeedsShell::Or),
                '|' => {
                    self.flag(NeedsShell::Pipe);
                    self.end_word();
                    self.i += 1;
                }
                '&' if self.peek(1) == Some('&') => {
                    self.end_command(Some(Sep::And))?;
                    self.i += 2;
                    self.cmd_start = self.i;
                }
                '&' => return Err(NeedsShell::Background),
                ';' if self.peek(1) == Some(';') => return Err(NeedsShell::Empty("';;'")),
                ';' => {
                    self.end_command(Some(Sep::Semi))?;
                    self.i += 1;
                    self.cmd_start = self.i;
                }
                '>' | '<' => self.redirect()?,
                '(' | ')' => return Err(NeedsShell::Subshell),
                // A comment runs to the end of the text.
                '#' if self.word.is_none() => self.i = self.chars.len(),
                '~' if self.word.is_none() => {
                    self.flag(NeedsShell::Tilde);
                    self.plain(c);
                    self.i += 1;
                }
                '*' | '?' => {
                    self.flag(NeedsShell::Glob(c));
                    self.plain(c);
                    self.i += 1;
                }
                _ => {
                    self.plain(c);
                    self.i += 1;
                }
            }
        }
        self.end_command(None)
    }

    fn plain_str(&mut self, s: &str) {
        for c in s.chars() {
            self.plain(c);
        }
    }

    /// At a `$`: a token (returned, consumed), a literal `$` (returned), or an expansion
    /// (flagged and skipped, or an error for `$(`).
    fn dollar(&mut self) -> Result<Option<&'static str>, NeedsShell> {
        let rest = &self.chars[self.i..];
        for tok in TOKENS {
            if rest.len() >= tok.len() && rest.iter().zip(tok.chars()).all(|(a, b)| *a == b) {
                self.i += tok.len();
                return Ok(Some(tok));
            }
        }
        let start = self.i;
        match self.peek(1) {
            Some('(') => return Err(NeedsShell::Substitution("$(...)")),
            Some('{') => {
                let close = self.chars[self.i..].iter().position(|&c| c == '}');
                self.i = close.map_or(self.chars.len(), |k| self.i + k + 1);
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                self.i += 1;
                while self
                    .peek(0)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    self.i += 1;
                }
            }
            Some(c) if c.is_ascii_digit() || "@*#?-$!".contains(c) => self.i += 2,
            _ => {
                self.i += 1;
                return Ok(Some("$"));
            }
        }
        let name: String = self.chars[start..self.i].iter().collect();
        self.flag(NeedsShell::Variable(name));
        Ok(None)
    }

    fn double_quoted(&mut self) -> Result<(), NeedsShell> {
        self.i += 1;
        self.word().quoted = true;
        loop {
            match self.peek(0) {
                None => return Err(NeedsShell::Unbalanced('"')),
                Some('"') => {
                    self.i += 1;
                    return Ok(());
                }
                // Inside double quotes a backslash only escapes these; elsewhere it stays.
                Some('\\') => match self.peek(1) {
                    Some(n @ ('$' | '`' | '"' | '\\')) => {
                        self.quoted(&n.to_string());
                        self.i += 2;
                    }
                    None => return Err(NeedsShell::Unbalanced('"')),
                    Some(_) => {
                        self.quoted("\\");
                        self.i += 1;
                    }
                },
                Some('$') => {
                    if let Some(tok) = self.dollar()? {
                        self.quoted(tok);
                    }
                }
                Some('`') => return Err(NeedsShell::Substitution("backticks")),
                Some(c) => {
                    self.quoted(&c.to_string());
                    self.i += 1;
                }
            }
        }
    }

    /// `[n]>file`, `>>`, `>&n`, `<file`, …: output thrown away is what portsentry does
    /// anyway and is dropped; anything else is flagged.
    fn redirect(&mut self) -> Result<(), NeedsShell> {
        let io_number = self
            .word
            .as_ref()
            .filter(|w| !w.quoted && w.text.chars().all(|c| c.is_ascii_digit()))
            .map(|w| w.text.clone());
        let start = if let Some(n) = &io_number {
            self.word = None;
            self.i - n.chars().count()
        } else {
            self.end_word();
            self.i
        };
        let op = self.chars[self.i];
        self.i += 1;
        let second = self.peek(0).filter(|n| match op {
            '>' => matches!(n, '>' | '&' | '|'),
            _ => matches!(n, '<' | '&' | '>'),
        });
        if op == '<' && second == Some('<') {
            return Err(NeedsShell::HereDoc);
        }
        if second.is_some() {
            self.i += 1;
        }
        while matches!(self.peek(0), Some(' ' | '\t')) {
            self.i += 1;
        }
        let target_start = self.i;
        while self
            .peek(0)
            .is_some_and(|c| !c.is_whitespace() && !";&|<>()".contains(c))
        {
            self.i += 1;
        }
        let target: String = self.chars[target_start..self.i].iter().collect();
        let fd = io_number
            .as_deref()
            .unwrap_or(if op == '>' { "1" } else { "0" });
        let discard = match (op, second, target.as_str()) {
            ('>', None | Some('>' | '|'), "/dev/null") => fd == "1" || fd == "2",
            ('>', Some('&'), "1") => fd == "2",
            ('>', Some('&'), "2") => fd == "1",
            ('<', None, "/dev/null") => fd == "0",
            _ => false,
        };
        if discard {
            self.script.discarded_output = true;
        } else {
            let shown: String = self.chars[start..self.i].iter().collect();
            self.flag(NeedsShell::Redirect(shown));
        }
        Ok(())
    }
}

/// What the first word makes of the command: `A=b cmd`, `if`, `cd`.
fn command_word_problem(words: &[Word]) -> Option<NeedsShell> {
    let first = words.first()?;
    let name_len = first.lead.find('=').filter(|&k| k > 0).filter(|&k| {
        let name = &first.lead[..k];
        name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    });
    if name_len.is_some() {
        return Some(NeedsShell::Assignment(first.text.clone()));
    }
    if !first.quoted && KEYWORDS.contains(&first.text.as_str()) {
        return Some(NeedsShell::Keyword(first.text.clone()));
    }
    if BUILTINS.contains(&first.text.as_str()) {
        return Some(NeedsShell::Builtin(first.text.clone()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn argvs(text: &str) -> Vec<Vec<String>> {
        parse(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .commands
            .into_iter()
            .map(|c| c.argv.unwrap_or_else(|e| panic!("{text}: {e}")))
            .collect()
    }

    fn problem(text: &str) -> NeedsShell {
        match parse(text) {
            Err(e) => e,
            Ok(s) => s
                .commands
                .into_iter()
                .find_map(|c| c.argv.err())
                .unwrap_or_else(|| panic!("{text}: no problem found")),
        }
    }

    #[test]
    fn words_quotes_and_backslashes_as_sh_reads_them() {
        assert_eq!(
            argvs("/sbin/iptables -I INPUT -s $TARGET$ -j DROP"),
            vec![vec![
                "/sbin/iptables",
                "-I",
                "INPUT",
                "-s",
                "$TARGET$",
                "-j",
                "DROP"
            ]]
        );
        assert_eq!(
            argvs("logger --log-prefix 'Portsentry: dropping: ' x"),
            vec![vec![
                "logger",
                "--log-prefix",
                "Portsentry: dropping: ",
                "x"
            ]]
        );
        assert_eq!(
            argvs(r#"a "b c" d\ e 'f"g' "h'i" "j\"k" "l\m" "n\\o" '' """#),
            vec![vec![
                "a", "b c", "d e", "f\"g", "h'i", "j\"k", "l\\m", "n\\o", "", ""
            ]]
        );
        // Tokens are PortSentry's, replaced before sh ran: literal even in single quotes.
        assert_eq!(
            argvs("x '$TARGET$' \"$PORT$:$MODE$\" a$TARGET$b"),
            vec![vec!["x", "$TARGET$", "$PORT$:$MODE$", "a$TARGET$b"]]
        );
        // A lone `$`, `[`, `{ }` and `#` inside a word are literal.
        assert_eq!(
            argvs("echo $ [ x{ } a#b {} # a comment && rm -rf /"),
            vec![vec!["echo", "$", "[", "x{", "}", "a#b", "{}"]]
        );
        assert_eq!(argvs("  \t "), Vec::<Vec<String>>::new());
    }

    #[test]
    fn and_and_semicolon_make_a_sequence() {
        let s = parse("/a 1 && /b 2; /c 3;").unwrap();
        assert_eq!(s.separators, vec![Sep::And, Sep::Semi]);
        assert_eq!(s.commands.len(), 3);
        assert_eq!(s.commands[1].text, "/b 2");
        assert_eq!(argvs("/a&&/b;/c"), vec![vec!["/a"], vec!["/b"], vec!["/c"]]);
        assert_eq!(argvs("/a '&&' /b ';'"), vec![vec!["/a", "&&", "/b", ";"]]);
    }

    #[test]
    fn output_thrown_away_is_dropped() {
        for text in [
            "/a x >/dev/null 2>&1",
            "/a x > /dev/null 2> /dev/null",
            "/a x 1>>/dev/null </dev/null",
            "/a x 2>&1 >/dev/null",
        ] {
            let s = parse(text).unwrap();
            assert!(s.discarded_output, "{text}");
            assert_eq!(argvs(text), vec![vec!["/a", "x"]], "{text}");
        }
        // `a2>` is the word a2 and a redirection of stdout.
        assert_eq!(argvs("/a x2>/dev/null"), vec![vec!["/a", "x2"]]);
    }

    #[test]
    fn what_needs_a_shell_is_named() {
        use NeedsShell::*;
        for (text, want) in [
            ("/a 'x", Unbalanced('\'')),
            ("/a \"x", Unbalanced('"')),
            ("/a \"x\\", Unbalanced('"')),
            ("/a x\\", DanglingBackslash),
            ("/a \u{7}", Control),
            ("/a $(reboot)", Substitution("$(...)")),
            ("/a \"$(reboot)\"", Substitution("$(...)")),
            ("/a `reboot`", Substitution("backticks")),
            ("/a \"`reboot`\"", Substitution("backticks")),
            ("(/a)", Subshell),
            ("/a || /b", Or),
            ("/a & /b", Background),
            ("/a &>/dev/null", Background),
            ("/a && && /b", Empty("nothing before '&&'")),
            ("&& /a", Empty("nothing before '&&'")),
            ("/a &&", Empty("nothing after '&&'")),
            ("/a ;; /b", Empty("';;'")),
            ("; /a", Empty("nothing before ';'")),
            ("/a <<EOF", HereDoc),
            ("/a | /b", Pipe),
            ("/a > /tmp/log", Redirect("> /tmp/log".into())),
            ("/a 2>>/var/log/x", Redirect("2>>/var/log/x".into())),
            ("/a $HOME", Variable("$HOME".into())),
            ("/a \"${X}\"", Variable("${X}".into())),
            ("/a $1", Variable("$1".into())),
            ("/a $TARGET", Variable("$TARGET".into())),
            ("/a *.log", Glob('*')),
            ("/a x?", Glob('?')),
            ("/a [ab]", Glob('[')),
            ("/a {b,c}", Brace("{b,c}".into())),
            ("/a ~/x", Tilde),
            ("PATH=/x /a", Assignment("PATH=/x".into())),
            ("X=\"y z\" /a", Assignment("X=y z".into())),
            ("if /a; then /b; fi", Keyword("if".into())),
            ("! /a", Keyword("!".into())),
            ("cd /tmp && /a", Builtin("cd".into())),
            ("'exec' /a", Builtin("exec".into())),
        ] {
            assert_eq!(problem(text), want, "{text}");
        }
        // Quoted, none of these are special.
        assert_eq!(
            argvs("/a '|' \"&\" '$(x)' \\; '*' \"~\" 'X=1' '{a,b}' \\$HOME"),
            vec![vec![
                "/a", "|", "&", "$(x)", ";", "*", "~", "X=1", "{a,b}", "$HOME"
            ]]
        );
        // `'if'` quoted is a program name, not the keyword.
        assert_eq!(argvs("'if' x"), vec![vec!["if", "x"]]);
        assert_eq!(argvs("/a X=1"), vec![vec!["/a", "X=1"]]);
    }

    #[test]
    fn a_problem_stays_with_its_command() {
        let s = parse("/a x && /b | /c ; /d").unwrap();
        assert_eq!(s.commands.len(), 3);
        assert!(s.commands[0].argv.is_ok() && s.commands[2].argv.is_ok());
        assert_eq!(s.commands[1].argv, Err(NeedsShell::Pipe));
        assert_eq!(s.commands[1].text, "/b | /c");
    }

    #[test]
    fn a_megabyte_line_is_read_in_one_pass() {
        let long = format!("/a {}", "x'y'\"z\" ".repeat(150_000));
        let t = std::time::Instant::now();
        assert_eq!(argvs(&long)[0].len(), 150_001);
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
    }

    /// sh-quoting for the round trip below.
    fn sh_quote(w: &str) -> String {
        format!("'{}'", w.replace('\'', "'\\''"))
    }

    proptest! {
        /// Never a panic, whatever the text.
        #[test]
        fn any_text_parses_or_says_why(text in "[ -~\t\u{80}-\u{10ffff}]{0,80}") {
            let _ = parse(&text);
        }

        /// Argv lists quoted for sh and joined with `&&` read back unchanged.
        #[test]
        fn quoted_commands_read_back(cmds in prop::collection::vec(
            prop::collection::vec("[ -~]{0,12}", 1..5), 1..4)
        ) {
            prop_assume!(cmds.iter().all(|c| !BUILTINS.contains(&c[0].as_str())));
            let text = cmds
                .iter()
                .map(|c| c.iter().map(|w| sh_quote(w)).collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join(" && ");
            let s = parse(&text).unwrap();
            let got: Vec<Vec<String>> = s.commands.into_iter().map(|c| c.argv.unwrap()).collect();
            prop_assert_eq!(got, cmds);
        }
    }
}
