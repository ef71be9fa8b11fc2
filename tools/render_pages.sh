#!/usr/bin/env bash
# Look at the pages as a reader would: render README.md and results/REPORT.md to HTML (pandoc,
# GitHub-flavoured Markdown) and take headless-Chromium screenshots of the README's first screen and
# of one claim section of the report. Needs Debian's pandoc and chromium (`apt-get install pandoc
# chromium`). Writes into OUT (default: a new temporary folder) and prints the PNG paths; nothing is
# written into the repository. Usage: tools/render_pages.sh [OUT] [SECTION]
# SECTION: the report heading whose section is shot (default: the claim 1 notebook's).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-$(mktemp -d)}
section=${2:-"### 01 · Claim 1"}
mkdir -p "$out"
for tool in pandoc chromium; do
  command -v "$tool" >/dev/null || { echo "render_pages: needs $tool (apt-get install $tool)" >&2; exit 2; }
done
css="$out/page.css"
cat > "$css" <<'CSS'
body { font-family: sans-serif; max-width: 980px; margin: 24px auto; font-size: 15px; line-height: 1.45; }
table { border-collapse: collapse; font-size: 13px; } td, th { border: 1px solid #ccc; padding: 3px 6px; }
img { max-width: 100%; } code { background: #f3f3f3; }
CSS
page() {  # page SOURCE.md TARGET.html BASE: relative links and images resolve from the folder BASE
  pandoc -f gfm -t html5 --standalone --metadata title=" " --css "$css" "$1" -o "$2"
  sed -i "s|<head>|<head><base href=\"file://$(cd "$3" && pwd)/\">|" "$2"
}
shot() {  # shot PAGE.html TARGET.png HEIGHT
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$(mktemp -d)" --hide-scrollbars \
    --window-size=1280,"$3" --screenshot="$2" "file://$1" >/dev/null 2>&1
}
page README.md "$out/README.html" .
shot "$out/README.html" "$out/readme_first_screen.png" 1000
awk -v s="$section" 'index($0, s) == 1 {on = 1; print; next} on && /^#{1,3} / {exit} on' results/REPORT.md > "$out/section.md"
page "$out/section.md" "$out/section.html" results
shot "$out/section.html" "$out/report_section.png" 2400
echo "$out/readme_first_screen.png"
echo "$out/report_section.png"
