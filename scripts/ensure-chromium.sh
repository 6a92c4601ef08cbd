#!/usr/bin/env bash
# Install Debian's Chromium (browser tests, screenshots) and a CJK font (Chinese pages in the browser, the
# sign-off sheets ItemGate prints) when they are missing and we are allowed to.
set -u
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
fc-list :lang=zh 2>/dev/null | grep -qi "noto" || need+=(fonts-noto-cjk)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${need[*]} (apt-get) …"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null) \
    || echo "could not install ${need[*]}; browser tests will be skipped if Chromium is missing"
else
  echo "${need[*]} not installed and cannot be installed here; browser tests will be skipped if Chromium is missing"
fi
exit 0
