//! The of-watchdog's static mode: the files under `static_path`, and never anything outside it.
//!
//! GET and HEAD only (405 otherwise). A directory is served by its `index.html`; there are no
//! listings. The path is percent-decoded; `.`/`..` segments and NUL are refused, and the resolved
//! path (symbolic links followed) must stay under the resolved root: anything else is the same
//! `404 page not found` as a missing file, so nothing about the outside is revealed. Files are
//! streamed, never read whole.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, IF_MODIFIED_SINCE, LAST_MODIFIED};
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, ReadBuf};

use super::{BoxFuture, Handler, Scope};
use crate::answers;
use crate::body::{Body, Cut, RequestBody};
use crate::cgi;
use crate::config::Config;

/// The most read from a file at once.
const CHUNK: usize = 64 * 1024;

pub struct StaticFiles {
    /// `static_path` with every link resolved: the boundary no served file may cross.
    root: PathBuf,
}

/// What a request path leads to.
enum Target {
    File(Found),
    /// Go's FileServer redirects: `/dir` → `dir/`, `…/index.html` → `./`.
    Redirect(String),
    Missing,
}

/// An open regular file under the root.
struct Found {
    file: File,
    len: u64,
    modified: Option<SystemTime>,
    content_type: &'static str,
}

impl Handler for StaticFiles {
    fn call(self: Arc<Self>, req: Request<RequestBody>, _scope: Scope) -> BoxFuture<Response<Body>> {
        Box::pin(async move { self.handle(req).await })
    }
}

impl StaticFiles {
    /// Fails when `static_path` is not a directory that can be resolved (the reference then answers
    /// every request with 404).
    pub fn new(cfg: &Config) -> Result<StaticFiles, String> {
        let given = &cfg.static_path;
        let root =
            std::fs::canonicalize(given).map_err(|e| format!("static_path: cannot serve {}: {e}", given.display()))?;
        if !root.is_dir() {
            return Err(format!("static_path: {} is not a directory", given.display()));
        }
        log::info!("Serving files at: {}", given.display());
        Ok(StaticFiles { root })
    }

    async fn handle(self: Arc<Self>, req: Request<RequestBody>) -> Response<Body> {
        let head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => return answers::method_not_allowed(Some("GET, HEAD")),
        };
        let since = req.headers().get(IF_MODIFIED_SINCE).and_then(|v| httpdate::parse_http_date(v.to_str().ok()?).ok());
        let path = req.uri().path().to_string();
        let this = Arc::clone(&self);
        // canonicalize, open and fstat block: keep them off the runtime's threads.
        let target = tokio::task::spawn_blocking(move || resolve(&this.root, &path)).await;
        answer(target, head, since, req.uri().query())
    }
}

/// The answer for what the path led to. A lookup that failed (it panicked) is a 500: the file may
/// well exist, and a 404 would say it does not.
fn answer(
    target: Result<Target, tokio::task::JoinError>,
    head: bool,
    since: Option<SystemTime>,
    query: Option<&str>,
) -> Response<Body> {
    match target {
        Ok(Target::File(found)) => serve(found, head, since),
        Ok(Target::Redirect(location)) => answers::redirect(&location, query),
        Ok(Target::Missing) => answers::not_found(),
        Err(e) => {
            log::error!("static: looking up the file failed: {e}");
            answers::internal_error()
        }
    }
}

/// Maps a request path (as sent, percent-encoded) to what it names under `root`.
fn resolve(root: &Path, raw: &str) -> Target {
    let decoded = cgi::percent_decode(raw);
    let Some(relative) = relative_path(&decoded) else { return Target::Missing };
    let Some(real) = inside(root, &root.join(&relative)) else { return Target::Missing };
    let Ok(meta) = real.metadata() else { return Target::Missing };
    if meta.is_dir() {
        if !raw.ends_with('/') {
            let base = raw.rsplit('/').next().unwrap_or_default();
            return Target::Redirect(format!("{base}/"));
        }
        return open(root, &real.join("index.html"), "index.html");
    }
    if decoded.ends_with(b"/index.html") {
        return Target::Redirect("./".into());
    }
    if raw.ends_with('/') {
        return Target::Missing;
    }
    let name = relative.file_name().and_then(OsStr::to_str).unwrap_or_default();
    open(root, &real, name)
}

/// The decoded request path as a relative path of plain names; `None` if it has a `.` or `..`
/// segment or a NUL. (Unclean paths as sent were already redirected by the server; these come
/// from escapes such as `%2e%2e` or `%2f`.)
fn relative_path(decoded: &[u8]) -> Option<PathBuf> {
    if decoded.contains(&0) {
        return None;
    }
    let mut relative = PathBuf::new();
    for segment in decoded.split(|&b| b == b'/') {
        match segment {
            b"" => {}
            b"." | b".." => return None,
            name => relative.push(OsStr::from_bytes(name)),
        }
    }
    Some(relative)
}

/// `path` with every link resolved, if that is under `root`.
fn inside(root: &Path, path: &Path) -> Option<PathBuf> {
    path.canonicalize().ok().filter(|real| real.starts_with(root))
}

/// Opens a regular file under `root`; `name` gives the Content-Type.
fn open(root: &Path, path: &Path, name: &str) -> Target {
    let Some(real) = inside(root, path) else { return Target::Missing };
    // O_NOFOLLOW: a link swapped in after the check is refused; O_NONBLOCK: a FIFO can't hang us.
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(&real);
    let Ok(file) = file else { return Target::Missing };
    match file.metadata() {
        Ok(meta) if meta.is_file() => Target::File(Found {
            len: meta.len(),
            modified: meta.modified().ok().filter(|&m| m > UNIX_EPOCH),
            content_type: content_type(name),
            file,
        }),
        _ => Target::Missing,
    }
}

/// 200 with the file (HEAD: its headers only), or 304 when it has not changed since the client's
/// copy.
fn serve(found: Found, head: bool, since: Option<SystemTime>) -> Response<Body> {
    // HTTP dates have whole seconds.
    let modified = found
        .modified
        .map(|m| UNIX_EPOCH + Duration::from_secs(m.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())));
    let last_modified = modified.and_then(|m| HeaderValue::from_str(&httpdate::fmt_http_date(m)).ok());
    if let (Some(modified), Some(since)) = (modified, since)
        && modified <= since
    {
        let mut response = answers::status_only(StatusCode::NOT_MODIFIED);
        response.headers_mut().extend(last_modified.map(|v| (LAST_MODIFIED, v)));
        return response;
    }
    let len = found.len;
    let body = if head { Body::empty() } else { Body::stream(FileBody::new(found.file, len)) };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(found.content_type));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    headers.extend(last_modified.map(|v| (LAST_MODIFIED, v)));
    response
}

/// Content-Type by file extension; anything unknown is `application/octet-stream`.
fn content_type(name: &str) -> &'static str {
    let extension = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match extension.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "txt" => "text/plain; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "xml" => "text/xml; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "mp3" => "audio/mpeg",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        _ => "application/octet-stream",
    }
}

/// A file's first `len` bytes, a chunk at a time.
struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    buf: Box<[u8]>,
}

impl FileBody {
    fn new(file: File, len: u64) -> FileBody {
        let size = usize::try_from(len).map_or(CHUNK, |len| len.clamp(1, CHUNK));
        FileBody { file: tokio::fs::File::from_std(file), remaining: len, buf: vec![0; size].into_boxed_slice() }
    }
}

impl hyper::body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = usize::try_from(this.remaining).map_or(this.buf.len(), |r| r.min(this.buf.len()));
        let mut read = ReadBuf::new(&mut this.buf[..want]);
        ready!(Pin::new(&mut this.file).poll_read(cx, &mut read))?;
        let chunk = read.filled();
        if chunk.is_empty() {
            // The file shrank after its length was sent: end the response as broken, not short.
            return Poll::Ready(Some(Err(Cut::error(StatusCode::INTERNAL_SERVER_ERROR, "the file shrank while sent"))));
        }
        this.remaining -= chunk.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_make_a_relative_path() {
        assert_eq!(relative_path(b"/"), Some(PathBuf::new()));
        assert_eq!(relative_path(b"/a/b.txt"), Some(PathBuf::from("a/b.txt")));
        assert_eq!(relative_path(b"/a//b/"), Some(PathBuf::from("a/b")));
        assert_eq!(relative_path(b"/.hidden"), Some(PathBuf::from(".hidden")));
        for bad in [&b"/../etc/passwd"[..], b"/a/../../b", b"/a/./b", b"/..", b"/a\0b"] {
            assert_eq!(relative_path(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_lookup_that_panicked_is_a_500_not_a_404() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let failed = runtime.block_on(async { tokio::task::spawn_blocking(|| -> Target { panic!("lookup") }).await });
        assert!(failed.is_err());
        assert_eq!(answer(failed, false, None, None).status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(answer(Ok(Target::Missing), false, None, None).status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("APP.JS"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("a.b.woff2"), "font/woff2");
        assert_eq!(content_type("README"), "application/octet-stream");
        assert_eq!(content_type(".htaccess"), "application/octet-stream");
    }
}
