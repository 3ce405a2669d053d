"""Image metadata, the "extract metadata" step of a photo-upload app.

POST a PNG, JPEG or GIF; the answer is one line of JSON:
    {"format": "png", "width": 640, "height": 480, "bytes": 1234}

Anything else is answered with {"error": "...", "bytes": N} and exit status 1, which the classic
watchdog turns into a 500 whose body is "exit status 1" and then that JSON line.
Only the headers are read (no pixels are decoded), so large photos cost little. Standard library only.
"""

import json
import struct
import sys
import zlib


class NotAnImage(Exception):
    pass


def png_size(data):
    """Walks the chunks (length, type, data, CRC of type and data) up to IEND; IHDR must come first."""
    pos, size = 8, None
    while True:
        header = data[pos : pos + 8]
        if len(header) < 8:
            raise NotAnImage("truncated PNG: no IEND chunk")
        length, kind = struct.unpack(">I4s", header)
        name = kind.decode("ascii", "replace")
        end = pos + 12 + length
        if end > len(data):
            raise NotAnImage(f"truncated PNG: chunk {name} is cut short")
        body = data[pos + 8 : end - 4]
        if zlib.crc32(kind + body) != struct.unpack(">I", data[end - 4 : end])[0]:
            raise NotAnImage(f"corrupt PNG: bad CRC in chunk {name}")
        if size is None:
            if kind != b"IHDR" or length != 13:
                raise NotAnImage("corrupt PNG: the first chunk is not IHDR")
            size = struct.unpack(">II", body[:8])
        if kind == b"IEND":
            return size
        pos = end


# Start-of-frame markers carry the size; C4 (DHT), C8 (reserved) and CC (DAC) are not frames.
JPEG_FRAMES = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_size(data):
    """Walks the marker segments after SOI until a start-of-frame segment."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise NotAnImage(f"corrupt JPEG: no marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or the scan, before any frame header
            break
        if marker in JPEG_FRAMES:
            if pos + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
    raise NotAnImage("corrupt JPEG: no frame header (SOF)")


def gif_size(data):
    if len(data) < 10:
        raise NotAnImage("truncated GIF")
    return struct.unpack("<HH", data[6:10])


FORMATS = [
    (b"\x89PNG\r\n\x1a\n", "png", png_size),
    (b"\xff\xd8\xff", "jpeg", jpeg_size),
    (b"GIF87a", "gif", gif_size),
    (b"GIF89a", "gif", gif_size),
]


def metadata(data):
    for magic, name, size in FORMATS:
        if data.startswith(magic):
            width, height = size(data)
            if width == 0 or height == 0:
                raise NotAnImage(f"corrupt {name.upper()}: width or height is 0")
            return {"format": name, "width": width, "height": height, "bytes": len(data)}
    raise NotAnImage("not a PNG, JPEG or GIF image")


def main():
    data = sys.stdin.buffer.read()
    try:
        print(json.dumps(metadata(data)))
        return 0
    except NotAnImage as e:
        print(json.dumps({"error": str(e), "bytes": len(data)}))
        return 1


if __name__ == "__main__":
    sys.exit(main())
