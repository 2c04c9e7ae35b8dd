# Shared helpers for the tests/cli_*.sh scripts (sourced, not run): pass/fail
# counting and byte-exact safetensors fixtures written with printf.
fails=0; passes=0
ok()  { passes=$((passes + 1)); }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
# le64 N: N as 8 little-endian bytes
le64() { local n=$1 s=""; for _ in 1 2 3 4 5 6 7 8; do s+=$(printf '\\x%02x' $((n & 255))); n=$((n >> 8)); done; printf "$s"; }
# st FILE HEADER DATA: a safetensors file from its JSON header and printf-escaped data bytes
st() { { le64 ${#2}; printf '%s' "$2"; printf "$3"; } > "$1"; }
# little-endian f32 values
one='\x00\x00\x80\x3f'; two='\x00\x00\x00\x40'; half='\x00\x00\x00\x3f'; neg='\x00\x00\x80\xbf'; zero='\x00\x00\x00\x00'
