#!/usr/bin/env bash
# Make sure a WordNet 3.0 database is available for the `synonym` augmentation, offline-friendly.
#
# Idempotent: does nothing when Debian's `wordnet-base` files are already in /usr/share/wordnet.
# Otherwise, as root with apt-get, installs `wordnet-base` (quietly). Prints one line saying where
# WordNet is or why it could not be installed, and always exits 0: WordNet is optional (only
# --aug=synonym needs it) and the test suite reports its absence itself.

DEBIAN_DIR=/usr/share/wordnet

have_wordnet() {
  # The noun index and data are the biggest files; if both are there the package is installed.
  [[ -s "$1/index.noun" && -s "$1/data.noun" ]]
}

if [[ -n "${WORDNET_DIR:-}" ]] && have_wordnet "$WORDNET_DIR"; then
  echo "install_wordnet: WordNet found at \$WORDNET_DIR=$WORDNET_DIR"
  exit 0
fi
if have_wordnet "$DEBIAN_DIR"; then
  echo "install_wordnet: WordNet found at $DEBIAN_DIR"
  exit 0
fi
# NLTK's own copy (nltk.download('wordnet')), in the usual nltk.data.path directories.
for d in ${NLTK_DATA//:/ } "$HOME/nltk_data" /usr/share/nltk_data /usr/local/share/nltk_data \
         /usr/lib/nltk_data /usr/local/lib/nltk_data; do
  if have_wordnet "$d/corpora/wordnet" || [[ -s "$d/corpora/wordnet.zip" ]]; then
    echo "install_wordnet: WordNet found in NLTK data at $d/corpora"
    exit 0
  fi
done
if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install_wordnet: WordNet not installed and cannot install it here (needs root, apt-get);" \
       "run 'apt-get install wordnet-base' or pass --wordnet_dir (synonym tests will be skipped)"
  exit 0
fi
# DEBIAN_FRONTEND: never stop at an interactive prompt. Output goes to a log so that the one-line
# contract holds; the log is shown in the failure line's hint.
# Lock::Timeout: wait for another apt/dpkg run (e.g. unattended upgrades) instead of failing.
log="$(mktemp -t install_wordnet.XXXXXX.log)"
apt_opts=(-qq -o DPkg::Lock::Timeout=120)
if DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update >"$log" 2>&1 \
    && DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y --no-install-recommends \
       wordnet-base >>"$log" 2>&1 \
    && have_wordnet "$DEBIAN_DIR"; then
  rm -f "$log"
  echo "install_wordnet: installed wordnet-base; WordNet is at $DEBIAN_DIR"
else
  echo "install_wordnet: could not install wordnet-base (see $log); synonym tests will be skipped"
fi
exit 0
