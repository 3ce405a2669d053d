//! The examples in examples/, run through the real binary the way their images run them: with the
//! settings of the example's Dockerfile and the example's files in the working directory.
//! (The http-mode example has its own file, example_http.rs.)

mod common;
mod example_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use example_support::*;

// ---------------------------------------------------------------- the canonical function

/// Bodies that a function must pass through byte for byte: text, nothing, lines, and non-UTF-8.
const BODIES: [&[u8]; 4] = [b"World", b"", b"line one\nline two\n", &[0, 0xff, 0xfe, b'\n', 0x80]];

fn says_hello(wd: &Watchdog, greeting: &str) {
    for body in BODIES {
        let r = wd.post("/", body);
        assert_eq!(r.status, 200, "{}\nlog:\n{}", r.text(), wd.logs());
        let expected = [greeting.as_bytes(), body].concat();
        assert!(r.body == expected, "{:?} gave {:?}", String::from_utf8_lossy(body), r.text());
    }
}

#[test]
fn hello_python() {
    let wd = start("hello-python", &example_dir("hello-python"), &[]);
    says_hello(&wd, "Hello, Python. You said: ");
}

#[test]
fn hello_shell() {
    let wd = start("hello-shell", &example_dir("hello-shell"), &[]);
    says_hello(&wd, "Hello, shell. You said: ");
}

#[test]
fn hello_rust() {
    let wd = start("hello-rust", &build_hello_rust(), &[]);
    says_hello(&wd, "Hello, Rust. You said: ");
}

/// Builds examples/hello-rust (debug: the function is tiny) into a target directory under this
/// crate's, kept between runs so that a rebuild is a no-op, and returns the binary's directory.
fn build_hello_rust() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("examples");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--quiet", "--locked", "--offline", "--manifest-path"])
        .arg(example_dir("hello-rust").join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .output()
        .expect("run cargo");
    assert!(out.status.success(), "cargo build of examples/hello-rust:\n{}", String::from_utf8_lossy(&out.stderr));
    target.join("debug")
}

// ---------------------------------------------------------------- short links (cgi_response)

#[test]
fn short_links_redirect_and_answer_404_with_their_own_headers() {
    let wd = start("short-links", &example_dir("short-links"), &[]);
    let r = wd.get("/docs");
    assert_eq!((r.status, r.header("Location")), (301, Some("https://docs.openfaas.com/")), "{}", wd.logs());
    assert_eq!(r.header("Cache-Control"), Some("public, max-age=86400"));
    let r = wd.get("/nothing-here");
    assert_eq!((r.status, r.text().as_str()), (404, "No link called \"nothing-here\".\n"));
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
}

// ---------------------------------------------------------------- image metadata

fn image_metadata() -> Watchdog {
    start("image-metadata", &example_dir("image-metadata"), &[])
}

#[test]
fn image_metadata_of_png_jpeg_and_gif() {
    let wd = image_metadata();
    for (image, format, width, height) in
        [(png(300, 201), "png", 300, 201), (jpeg(640, 480), "jpeg", 640, 480), (gif(258, 3), "gif", 258, 3)]
    {
        let r = wd.post("/", &image);
        assert_eq!(r.status, 200, "{format}: {}", r.text());
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        let expected =
            format!(r#"{{"format": "{format}", "width": {width}, "height": {height}, "bytes": {}}}"#, image.len());
        assert_eq!(r.text(), expected + "\n");
    }
}

#[test]
fn image_metadata_answers_500_with_an_error_for_anything_else() {
    let wd = image_metadata();
    let mut bad_crc = png(4, 4);
    bad_crc[45] ^= 1; // a byte of the IDAT data
    let mut no_frame = jpeg(8, 8);
    no_frame.truncate(2 + 18 + 69); // SOI, APP0 and DQT only
    no_frame.extend([0xFF, 0xD9]);
    for (body, error) in [
        (b"hello, not an image".to_vec(), "not a PNG, JPEG or GIF image"),
        (png(4, 4)[..50].to_vec(), "truncated PNG: chunk IDAT is cut short"),
        (bad_crc, "corrupt PNG: bad CRC in chunk IDAT"),
        (no_frame, "corrupt JPEG: no frame header (SOF)"),
        (gif(0, 5), "corrupt GIF: width or height is 0"),
    ] {
        let r = wd.post("/", &body);
        assert_eq!(r.status, 500, "{error}: {}", r.text());
        // The classic watchdog puts the exit status first, then the function's output.
        assert_eq!(r.text(), format!("exit status 1\n{{\"error\": \"{error}\", \"bytes\": {}}}\n", body.len()));
    }
}

/// A valid RGB PNG: IHDR, one IDAT holding a zlib stream of stored (uncompressed) deflate blocks,
/// and IEND, each chunk with its CRC.
fn png(width: u32, height: u32) -> Vec<u8> {
    let mut pixels = Vec::new();
    for y in 0..height {
        pixels.push(0); // filter type of the row: none
        for x in 0..width {
            pixels.extend([x as u8, y as u8, 0x80]);
        }
    }
    let mut zlib = vec![0x78, 0x01]; // deflate, 32 KiB window, no dictionary
    let blocks: Vec<&[u8]> = pixels.chunks(usize::from(u16::MAX)).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len())); // BFINAL on the last; BTYPE 00 = stored
        let len = block.len() as u16;
        zlib.extend(len.to_le_bytes());
        zlib.extend((!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    zlib.extend(adler32(&pixels).to_be_bytes());
    let mut header = [width.to_be_bytes(), height.to_be_bytes()].concat();
    header.extend([8, 2, 0, 0, 0]); // 8 bits per sample, RGB, deflate, adaptive filtering, no interlace

    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(b"IHDR", header), (b"IDAT", zlib), (b"IEND", Vec::new())] {
        png.extend((data.len() as u32).to_be_bytes());
        let start = png.len();
        png.extend_from_slice(kind);
        png.extend(data);
        let crc = crc32(&png[start..]);
        png.extend(crc.to_be_bytes());
    }
    png
}

/// A valid baseline grayscale JPEG, evenly grey: SOI, APP0 (JFIF), DQT, SOF0 with the size, DHT,
/// SOS, the entropy-coded scan and EOI.
fn jpeg(width: u16, height: u16) -> Vec<u8> {
    fn segment(jpeg: &mut Vec<u8>, marker: u8, data: &[u8]) {
        jpeg.extend([0xFF, marker]);
        jpeg.extend((data.len() as u16 + 2).to_be_bytes());
        jpeg.extend_from_slice(data);
    }
    // A Huffman table with a single one-bit code, "0", for symbol 0: a DC difference of 0 in the
    // DC table, end-of-block in the AC table.
    let one_code = |class_and_id: u8| [[class_and_id, 1].as_slice(), &[0; 15], &[0]].concat();
    let ([w1, w0], [h1, h0]) = (width.to_be_bytes(), height.to_be_bytes());

    let mut jpeg = vec![0xFF, 0xD8];
    segment(&mut jpeg, 0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"); // version 1.1, aspect 1:1, no thumbnail
    segment(&mut jpeg, 0xDB, &[[0].as_slice(), &[1; 64]].concat()); // table 0: 8-bit, all ones
    segment(&mut jpeg, 0xC0, &[8, h1, h0, w1, w0, 1, 1, 0x11, 0]); // one component, 1x1, table 0
    segment(&mut jpeg, 0xC4, &one_code(0x00));
    segment(&mut jpeg, 0xC4, &one_code(0x10));
    segment(&mut jpeg, 0xDA, &[1, 1, 0x00, 0, 63, 0]); // component 1 with tables 0/0, full spectrum
    // Every 8x8 block is "0" (DC difference 0) then "0" (end of block); pad with one bits.
    let bits = usize::from(width).div_ceil(8) * usize::from(height).div_ceil(8) * 2;
    let mut scan = vec![0u8; bits.div_ceil(8)];
    if bits % 8 != 0 {
        scan[bits / 8] |= 0xFF >> (bits % 8);
    }
    jpeg.extend(scan);
    jpeg.extend([0xFF, 0xD9]);
    jpeg
}

/// A valid GIF89a with a black and white palette and one image of alternating pixels. Its LZW data
/// sends a clear code before every pixel, so codes stay 3 bits wide and no dictionary is built.
fn gif(width: u16, height: u16) -> Vec<u8> {
    let mut gif = b"GIF89a".to_vec();
    gif.extend(width.to_le_bytes());
    gif.extend(height.to_le_bytes());
    gif.extend([0x80, 0, 0]); // a global palette of 2 colours, background 0, no aspect ratio
    gif.extend([0, 0, 0, 0xFF, 0xFF, 0xFF]);
    gif.extend([0x2C, 0, 0, 0, 0]); // image descriptor at 0,0
    gif.extend(width.to_le_bytes());
    gif.extend(height.to_le_bytes());
    gif.extend([0, 2]); // no local palette; LZW minimum code size 2: clear = 4, end = 5

    let pixels = usize::from(width) * usize::from(height);
    let codes = (0..pixels).flat_map(|i| [4, i as u32 % 2]).chain([5]);
    let (mut data, mut bits, mut pending) = (Vec::new(), 0u32, 0);
    for code in codes {
        bits |= code << pending;
        pending += 3;
        while pending >= 8 {
            data.push(bits as u8);
            bits >>= 8;
            pending -= 8;
        }
    }
    if pending > 0 {
        data.push(bits as u8);
    }
    for block in data.chunks(255) {
        gif.push(block.len() as u8);
        gif.extend_from_slice(block);
    }
    gif.extend([0, 0x3B]); // end of the image data; trailer
    gif
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in bytes {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

#[test]
fn image_checksums_match_their_published_check_values() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
}

// ---------------------------------------------------------------- the Dockerfiles

#[test]
fn every_example_has_a_dockerfile_in_the_house_style() {
    let known = known_variables();
    let examples = examples();
    assert!(examples.len() >= 5, "{examples:?}");
    for name in examples {
        let path = example_dir(&name).join("Dockerfile");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for needle in [
            &format!("docker build -f examples/{name}/Dockerfile -t {name} ."),
            "FROM rust:1-bookworm AS watchdog",
            "musl-tools",
            "COPY .cargo ./.cargo",
            "COPY src ./src",
            "cargo build --release --locked --target x86_64-unknown-linux-musl",
            // The Go watchdog line, shown as the one line to switch from.
            "#      COPY --from=ghcr.io/openfaas/",
            "COPY --from=watchdog /fwatchdog /usr/bin/fwatchdog",
            "HEALTHCHECK ",
            "EXPOSE 8080 8081",
            "CMD [\"fwatchdog\"]",
        ] {
            assert!(text.contains(needle), "{}: missing {needle:?}", path.display());
        }
        for source in text.lines().filter_map(|l| l.strip_prefix("COPY examples/")) {
            let source = source.split_whitespace().next().unwrap_or_default();
            assert!(root().join("examples").join(source).exists(), "{}: COPY of missing {source}", path.display());
        }
        let env = dockerfile_env(&path);
        assert!(env.iter().any(|(k, _)| k == "fprocess"), "{}: no fprocess", path.display());
        for (variable, _) in env {
            assert!(known.contains_key(&variable), "{}: {variable} is not in fwatchdog --help", path.display());
        }
    }
}
