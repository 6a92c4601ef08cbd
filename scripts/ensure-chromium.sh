#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests when it is missing and we are allowed to.
set -u
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium for the browser tests (apt-get) …"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "could not install chromium; browser tests will be skipped"
else
  echo "chromium is not installed and cannot be installed here; browser tests will be skipped"
fi
exit 0
