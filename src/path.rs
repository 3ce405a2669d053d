//! Request paths as Go's `ServeMux` and `FileServer` treat them: cleaning (the router redirects an
//! unclean path to its clean form) and escaping a path for a `Location` header.

/// Go's `ServeMux` path cleaning: `None` when `path` is already clean, else the cleaned path
/// (`//a/../b` → `/b`; a trailing slash is kept).
pub fn clean(path: &str) -> Option<String> {
    if !path.contains("//") && !path.contains("/.") {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut clean = String::with_capacity(path.len());
    for part in &parts {
        clean.push('/');
        clean.push_str(part);
    }
    if parts.is_empty() || path.ends_with('/') {
        clean.push('/');
    }
    (clean != path).then_some(clean)
}

/// `path` (as sent, percent-encoded) with every byte that Go's URL escaping would escape in a path
/// written as `%XX`, and escapes already there kept. Above all `\`: browsers read `/\evil.com` as
/// `//evil.com`, another site, so a redirect to it would be an open redirect.
pub fn escape(path: &str) -> String {
    let keep = |b: u8| b.is_ascii_alphanumeric() || b"-._~$&+,/:;=@%".contains(&b);
    if path.bytes().all(keep) {
        return path.to_string();
    }
    let mut escaped = String::with_capacity(path.len() + 8);
    for b in path.bytes() {
        if keep(b) {
            escaped.push(b as char);
        } else {
            escaped.push_str(&format!("%{b:02X}"));
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn paths_are_cleaned_like_go() {
        assert_eq!(clean("/"), None);
        assert_eq!(clean("/a/b/"), None);
        assert_eq!(clean("/a.b/.c"), None);
        assert_eq!(clean("//a/../b"), Some("/b".into()));
        assert_eq!(clean("/a/./b"), Some("/a/b".into()));
        assert_eq!(clean("/a//"), Some("/a/".into()));
        assert_eq!(clean("/.."), Some("/".into()));
        assert_eq!(clean("/a/.."), Some("/".into()));
    }

    #[test]
    fn redirect_paths_are_escaped_like_go() {
        assert_eq!(escape("/\\evil.com"), "/%5Cevil.com");
        assert_eq!(escape("/a/b.c-d_e~f/"), "/a/b.c-d_e~f/");
        assert_eq!(escape("/%2e%2E/x"), "/%2e%2E/x", "escapes already there are kept");
        assert_eq!(escape("/a b\"<>^`{|}'!*()[]"), "/a%20b%22%3C%3E%5E%60%7B%7C%7D%27%21%2A%28%29%5B%5D");
        assert_eq!(escape("/é"), "/%C3%A9");
        assert_eq!(escape("/$&+,:;=@"), "/$&+,:;=@");
    }
}
