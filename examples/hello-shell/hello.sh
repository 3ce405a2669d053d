#!/bin/sh
# The canonical function: fwatchdog writes the request body to STDIN and answers with STDOUT.
printf 'Hello, shell. You said: '
exec cat
