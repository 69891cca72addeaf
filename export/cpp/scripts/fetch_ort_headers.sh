#!/usr/bin/env bash
# Install the ONNX Runtime C/C++ API headers (API version 29, MIT licence) from the npm registry into
# DEST (default /usr/local/include/onnxruntime). The Python `onnxruntime` wheel ships the shared
# library but no headers; the npm package com.github.asus4.onnxruntime (a Unity plugin that repackages
# Microsoft's release) carries the unmodified public headers inside its iOS xcframework. The C API is
# versioned (OrtGetApiBase()->GetApi(ORT_API_VERSION)), so v29 headers work with any ORT >= 1.29.
set -euo pipefail
DEST="${1:-/usr/local/include/onnxruntime}"
PACKAGE="com.github.asus4.onnxruntime@0.4.9"
if [ -f "$DEST/onnxruntime_cxx_api.h" ]; then echo "ONNX Runtime headers already in $DEST"; exit 0; fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && npm pack --silent "$PACKAGE" >/dev/null)
HEADERS='package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64_x86_64-maccatalyst/onnxruntime.framework/Versions/A/Headers'
tar xzf "$WORK"/*.tgz -C "$WORK" "$HEADERS"
mkdir -p "$DEST"
cp "$WORK/$HEADERS"/*.h "$DEST"/
echo "ONNX Runtime headers installed in $DEST"
