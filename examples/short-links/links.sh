#!/bin/sh
# A link shortener's lookup, as a CGI-style function (cgi_response=true): the output starts with
# header lines and an empty line, then the body. GET /<name> redirects to the link's target; an
# unknown name is a 404 that caches must not keep. The links are the file `links` beside this
# script: one "<name> <target>" per line.
name=${Http_Path#/}
target=$(awk -v name="$name" '$1 == name { print $2; exit }' "$(dirname "$0")/links" 2>/dev/null)
if [ -n "$name" ] && [ -n "$target" ]; then
  printf 'Status: 301 Moved Permanently\r\n'
  printf 'Location: %s\r\n' "$target"
  printf 'Cache-Control: public, max-age=86400\r\n'
  printf '\r\n'
  exit 0
fi
printf 'Status: 404 Not Found\r\n'
printf 'Cache-Control: no-store\r\n'
printf 'Content-Type: text/plain; charset=utf-8\r\n'
printf '\r\n'
printf 'No link called "%s".\n' "$name"
