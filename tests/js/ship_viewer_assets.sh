#!/bin/sh
# Copy the built CesiumJS and Marzipano that `npm ci --prefix tests/js` installed into cim/data/viewer/, trimmed to
# what `cim view` serves, with their licences. Run from the repository root after changing their versions in
# tests/js/package.json; commit the result (the package data of `pip install cim`).
set -eu
modules=tests/js/node_modules
dest=cim/data/viewer
rm -rf "$dest/cesium" "$dest/marzipano"
mkdir -p "$dest/cesium" "$dest/marzipano"
build=$modules/cesium/Build/Cesium
# Cesium.js (IIFE bundle) and what it loads at run time; not index.js / index.cjs (the ES module builds).
cp -R "$build/Cesium.js" "$build/Workers" "$build/ThirdParty" "$build/Assets" "$build/Widgets" "$dest/cesium/"
cp "$modules/cesium/LICENSE.md" "$dest/cesium/LICENSE.md"               # Apache-2.0 + third-party notices
cp "$modules/cesium/ThirdParty.json" "$dest/cesium/ThirdParty.json"
node -e 'const p=require(process.argv[1]);console.log(p.name+" "+p.version)' "$PWD/$modules/cesium/package.json" \
  > "$dest/cesium/VERSION"
cp "$modules/marzipano/dist/marzipano.js" "$dest/marzipano/marzipano.js"
cp "$modules/marzipano/LICENSE" "$dest/marzipano/LICENSE"               # Apache-2.0
# marzipano.js bundles these packages: their licences, each under its name and version
for pkg in bowser gl-matrix hammerjs minimal-event-emitter; do
  node -e 'const p=require(process.argv[1]);console.log("== "+p.name+" "+p.version+" ==")' \
    "$PWD/$modules/$pkg/package.json"
  cat "$modules/$pkg"/LICENSE*
  echo
done > "$dest/marzipano/THIRD-PARTY.txt"
node -e 'const p=require(process.argv[1]);console.log(p.name+" "+p.version)' "$PWD/$modules/marzipano/package.json" \
  > "$dest/marzipano/VERSION"
du -sh "$dest/cesium" "$dest/marzipano"
