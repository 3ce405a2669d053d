//! Splits `fprocess` into an argument vector the way a POSIX shell splits words, without a shell:
//! whitespace separates words, single quotes take everything literally, double quotes group and
//! honour `\"`, `\\`, `\$` and `` \` ``, and a backslash outside quotes escapes the next character.
//! Nothing is expanded: no variables, globs or command substitution.

/// Splits `line` into words. An unbalanced quote or a trailing backslash is an error.
pub fn split(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    // A quoted empty string ('' or "") is a word even though it adds no characters.
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unbalanced single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unbalanced double quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unbalanced double quote".into()),
                    }
                }
            }
            // A backslash-newline joins lines: it is removed and starts no word.
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => return Err("trailing backslash".into()),
            },
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::split;

    fn ok(line: &str) -> Vec<String> {
        split(line).unwrap()
    }

    #[test]
    fn whitespace_separates_and_collapses() {
        assert_eq!(ok("cat"), ["cat"]);
        assert_eq!(ok("  wc   -c \t"), ["wc", "-c"]);
        assert!(ok("   ").is_empty());
    }

    #[test]
    fn quotes_group() {
        assert_eq!(ok(r#"sh -c "echo hi""#), ["sh", "-c", "echo hi"]);
        assert_eq!(ok("sh -c 'echo \"x\"; exit 3'"), ["sh", "-c", "echo \"x\"; exit 3"]);
        assert_eq!(ok(r#"a"b c"d"#), ["ab cd"]);
        assert_eq!(ok(r#"x '' "" y"#), ["x", "", "", "y"]);
    }

    #[test]
    fn backslashes() {
        assert_eq!(ok(r"a\ b"), ["a b"]);
        assert_eq!(ok(r#""a\"b\\c\n""#), [r#"a"b\c\n"#]);
        assert_eq!(ok(r"'a\b'"), [r"a\b"]);
        assert_eq!(ok("cat \\\n -n"), ["cat", "-n"], "a continued line, as in a Dockerfile ENV");
        assert_eq!(ok("a\\\nb"), ["ab"]);
    }

    #[test]
    fn no_expansion() {
        assert_eq!(ok("echo $HOME *"), ["echo", "$HOME", "*"]);
    }

    #[test]
    fn unbalanced_is_an_error() {
        assert!(split("sh -c 'echo").is_err());
        assert!(split("sh -c \"echo").is_err());
        assert!(split("echo \\").is_err());
    }
}

#[cfg(test)]
mod proptests {
    use super::split;
    use proptest::prelude::*;

    /// Text rich in the characters the splitter treats specially.
    fn tricky() -> impl Strategy<Value = String> {
        let c = prop_oneof![
            Just('\''),
            Just('"'),
            Just('\\'),
            Just(' '),
            Just('\t'),
            Just('\n'),
            Just('$'),
            Just('`'),
            any::<char>()
        ];
        prop::collection::vec(c, 0..40).prop_map(|v| v.into_iter().collect())
    }

    /// Quotes `word` for a POSIX shell with single quotes (`'` becomes `'\''`).
    fn single_quoted(word: &str) -> String {
        format!("'{}'", word.replace('\'', r"'\''"))
    }

    /// Quotes `word` with double quotes, escaping what is special inside them.
    fn double_quoted(word: &str) -> String {
        let mut out = String::from("\"");
        for c in word.chars() {
            if matches!(c, '"' | '\\' | '$' | '`') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        out
    }

    proptest! {
        #[test]
        fn never_panics(line in tricky()) {
            let _ = split(&line);
        }

        #[test]
        fn single_quoted_words_round_trip(words in prop::collection::vec(tricky(), 0..6)) {
            let line = words.iter().map(|w| single_quoted(w)).collect::<Vec<_>>().join(" ");
            prop_assert_eq!(split(&line).unwrap(), words);
        }

        #[test]
        fn double_quoted_words_round_trip(words in prop::collection::vec(tricky(), 0..6)) {
            let line = words.iter().map(|w| double_quoted(w)).collect::<Vec<_>>().join(" \t ");
            prop_assert_eq!(split(&line).unwrap(), words);
        }

        #[test]
        fn plain_words_split_on_any_whitespace(
            words in prop::collection::vec("[^\\s'\"\\\\]{1,8}", 0..6),
            gaps in prop::collection::vec("[ \t\n]{1,3}", 7),
        ) {
            let mut line = gaps[0].clone();
            for (word, gap) in words.iter().zip(&gaps[1..]) {
                line.push_str(word);
                line.push_str(gap);
            }
            prop_assert_eq!(split(&line).unwrap(), words);
        }
    }
}
