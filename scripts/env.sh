# Sourced by the other scripts: LLVM 22 environment and an install check.
# shellcheck shell=bash

export LLVM_SYS_221_PREFIX=/usr/lib/llvm-22
export PATH="/usr/lib/llvm-22/bin:$PATH"

EMBER_APT_PACKAGES="llvm-22-dev libpolly-22-dev lld-22 clang-22 libzstd-dev zlib1g-dev libxml2-dev"

llvm_ok() {
    [ -x "$LLVM_SYS_221_PREFIX/bin/llvm-config" ] &&
        "$LLVM_SYS_221_PREFIX/bin/llvm-config" --version 2>/dev/null | grep -q '^22\.' &&
        [ -n "$(ls "$LLVM_SYS_221_PREFIX"/lib/libPolly*.a 2>/dev/null)" ]
}

# Installs LLVM 22 with apt when it is missing and we are root; otherwise says exactly what
# to run and fails.
ensure_llvm() {
    if llvm_ok; then
        echo "LLVM: $("$LLVM_SYS_221_PREFIX/bin/llvm-config" --version) at $LLVM_SYS_221_PREFIX"
        return 0
    fi
    echo "LLVM 22 not found at $LLVM_SYS_221_PREFIX."
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "Installing with apt: $EMBER_APT_PACKAGES"
        # shellcheck disable=SC2086
        if DEBIAN_FRONTEND=noninteractive apt-get update &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y $EMBER_APT_PACKAGES; then
            llvm_ok && return 0
        fi
        echo "error: apt could not install LLVM 22. If your apt sources do not carry llvm-22, add"
        echo "  apt.llvm.org first:  wget -qO- https://apt.llvm.org/llvm.sh | bash -s -- 22"
        echo "then run:  apt-get install -y $EMBER_APT_PACKAGES"
        return 1
    fi
    echo "error: LLVM 22 is required. Run as root:"
    echo "  sudo apt-get update && sudo apt-get install -y $EMBER_APT_PACKAGES"
    echo "(if your apt sources do not carry llvm-22: wget -qO- https://apt.llvm.org/llvm.sh | sudo bash -s -- 22)"
    return 1
}

ensure_cargo() {
    if command -v cargo >/dev/null 2>&1; then
        return 0
    fi
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
        return 0
    fi
    echo "error: Rust (cargo, 1.91 or newer) is required. Install it with:"
    echo "  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y && . \"\$HOME/.cargo/env\""
    return 1
}
