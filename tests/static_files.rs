//! mode=static, black box: files under static_path with their types and dates, and nothing from
//! outside it whatever the path says.

mod common;

use std::io::{BufReader, Read, Write};
use std::os::unix::fs::symlink;
use std::time::Duration;

use common::*;

const SECRET: &str = "top secret outside the root";

/// A site under `<tmp>/public`, with a secret file and directory beside it and links pointing out.
struct Site {
    tmp: TempDir,
    wd: Watchdog,
}

impl Site {
    fn new() -> Site {
        let tmp = TempDir::new();
        let root = tmp.path().join("public");
        let write = |path: &str, body: &[u8]| {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body).unwrap();
        };
        write("index.html", b"<h1>home</h1>\n");
        write("style.css", b"body{}");
        write("app.mjs", b"export {}");
        write("data.json", b"{}");
        write("logo.png", &[0x89, b'P', b'N', b'G', 0, 1, 2]);
        write("README", b"no extension");
        write("sub/index.html", b"<h1>sub</h1>\n");
        write("sub/page.txt", b"page\n");
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::write(tmp.path().join("secret"), SECRET).unwrap();
        std::fs::create_dir_all(tmp.path().join("outside")).unwrap();
        std::fs::write(tmp.path().join("outside/secret"), SECRET).unwrap();
        symlink(tmp.path().join("secret"), root.join("out")).unwrap();
        symlink(tmp.path().join("outside"), root.join("outdir")).unwrap();
        symlink("sub/page.txt", root.join("inner")).unwrap();
        let wd = Watchdog::start(&[("mode", "static"), ("static_path", root.to_str().unwrap())]);
        Site { tmp, wd }
    }

    /// A raw request, the path exactly as given (no client-side normalisation).
    fn raw(&self, method: &str, path: &str, headers: &str) -> Response {
        let request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n");
        send(self.wd.port, request.as_bytes()).unwrap()
    }

    fn get(&self, path: &str) -> Response {
        self.raw("GET", path, "")
    }
}

fn assert_not_found(r: &Response, path: &str) {
    assert_eq!((r.status, r.text().as_str()), (404, "404 page not found\n"), "{path}");
    assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"), "{path}");
}

#[test]
fn files_have_their_type_length_and_date() {
    let site = Site::new();
    for (path, body, content_type) in [
        ("/style.css", &b"body{}"[..], "text/css; charset=utf-8"),
        ("/app.mjs", b"export {}", "text/javascript; charset=utf-8"),
        ("/data.json", b"{}", "application/json"),
        ("/logo.png", &[0x89, b'P', b'N', b'G', 0, 1, 2], "image/png"),
        ("/README", b"no extension", "application/octet-stream"),
        ("/sub/page.txt", b"page\n", "text/plain; charset=utf-8"),
        ("/sub%2fpage.txt", b"page\n", "text/plain; charset=utf-8"),
        ("/inner", b"page\n", "application/octet-stream"),
    ] {
        let r = site.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert!(r.body == body, "{path}: {:?}", r.text());
        assert_eq!(r.header("Content-Type"), Some(content_type), "{path}");
        assert_eq!(r.header("Content-Length"), Some(body.len().to_string().as_str()), "{path}");
        assert!(r.header("Last-Modified").is_some_and(|d| d.ends_with(" GMT")), "{path}: {:?}", r.headers);
        assert_eq!(r.header("X-Duration-Seconds"), None);
    }
}

#[test]
fn directories_serve_their_index_and_redirect_like_go() {
    let site = Site::new();
    let r = site.get("/");
    assert_eq!((r.status, r.text().as_str()), (200, "<h1>home</h1>\n"));
    assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
    assert_eq!(site.get("/sub/").text(), "<h1>sub</h1>\n");
    for (path, location) in
        [("/sub", "sub/"), ("/sub?x=1", "sub/?x=1"), ("/index.html", "./"), ("/sub/index.html", "./")]
    {
        let r = site.get(path);
        assert_eq!((r.status, r.header("Location")), (301, Some(location)), "{path}");
    }
    assert_not_found(&site.get("/empty/"), "/empty/: no listings");
    assert_not_found(&site.get("/sub/page.txt/"), "a file is not a directory");
}

/// A redirect to a directory whose name has a backslash escapes it, as the path-cleaning redirect
/// does: `\\evil.com/` in a Location would take a browser to another site.
#[test]
fn a_backslash_in_a_directory_redirect_is_escaped() {
    let site = Site::new();
    let dir = site.tmp.path().join("public/\\\\evil.com");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "in").unwrap();
    let r = site.get("/\\\\evil.com");
    assert_eq!((r.status, r.header("Location")), (301, Some("%5C%5Cevil.com/")));
    assert_eq!(site.get("/%5C%5Cevil.com/").text(), "in");
}

#[test]
fn missing_files_are_404() {
    let site = Site::new();
    assert_not_found(&site.get("/nope.txt"), "/nope.txt");
    assert_not_found(&site.get("/sub/nope/"), "/sub/nope/");
}

#[test]
fn nothing_outside_the_root_is_ever_served() {
    let site = Site::new();
    for path in [
        "/%2e%2e/secret",
        "/%2E%2E/secret",
        "/sub/%2e%2e/%2e%2e/secret",
        "/..%2fsecret",
        "/%2e%2e%2fsecret",
        "/sub%2f..%2f..%2fsecret",
        "/%2e%2e/outside/secret",
        "/out",
        "/outdir/secret",
        "/outdir/",
        "/secret",
        "/a%00b",
        "/index.html%00.txt",
    ] {
        let r = site.get(path);
        assert!(!r.text().contains(SECRET), "{path} leaked the secret");
        assert_not_found(&r, path);
    }
    // Unclean paths as sent are redirected to their clean form first (inside the root).
    let r = site.get("/../secret");
    assert_eq!((r.status, r.header("Location")), (301, Some("/secret")));
    assert!(site.tmp.path().join("secret").exists(), "the test's secret is really there");
}

#[test]
fn if_modified_since_gives_304() {
    let site = Site::new();
    let r = site.get("/style.css");
    let last_modified = r.header("Last-Modified").unwrap().to_string();
    let r = site.raw("GET", "/style.css", &format!("If-Modified-Since: {last_modified}\r\n"));
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("Last-Modified"), Some(last_modified.as_str()));
    let r = site.raw("GET", "/style.css", "If-Modified-Since: Mon, 01 Jan 2001 00:00:00 GMT\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "body{}"), "changed since then");
    let r = site.raw("GET", "/style.css", "If-Modified-Since: yesterday\r\n");
    assert_eq!(r.status, 200, "an unreadable date is ignored");
}

#[test]
fn head_sends_the_headers_only() {
    let site = Site::new();
    let mut conn = site.wd.connect();
    conn.write_all(b"HEAD /sub/page.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut reader = BufReader::new(&conn);
    let r = read_head(&mut reader).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Length"), Some("5"));
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "no body after a HEAD: {rest:?}");
}

#[test]
fn other_methods_are_405() {
    let site = Site::new();
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let r = site.wd.request(method, "/index.html", &[], b"");
        assert_eq!((r.status, r.header("Allow")), (405, Some("GET, HEAD")), "{method}");
    }
}

#[test]
fn large_files_arrive_whole() {
    let site = Site::new();
    let big: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(site.tmp.path().join("public/big.bin"), &big).unwrap();
    let r = site.get("/big.bin");
    assert_eq!(r.status, 200);
    assert!(r.body == big, "20 MiB file changed");
    assert!(
        proc_status(site.wd.pid(), "VmHWM").unwrap() < 20 * 1024,
        "the file is streamed, not read whole into memory"
    );
}

#[test]
fn a_static_path_that_is_not_a_directory_stops_the_start() {
    let tmp = TempDir::new();
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let file = file.to_str().unwrap();
    for (path, needle) in
        [("/nonexistent/site", "static_path: cannot serve /nonexistent/site"), (file, "is not a directory")]
    {
        let tmpdir = tmp.path().display().to_string();
        let (code, stderr) = run_once(&[("mode", "static"), ("static_path", path), ("TMPDIR", &tmpdir)], &[]);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
    }
}

#[test]
fn health_and_ready_still_answer() {
    let site = Site::new();
    assert_eq!(site.get("/_/health").status, 200);
    assert_eq!(site.get("/_/ready").status, 200);
    wait_for(Duration::from_secs(2), "serving log line", || {
        site.wd.logs().contains("Serving files at: ").then_some(())
    });
}
