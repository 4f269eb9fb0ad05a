#!/usr/bin/env bash
# The core library's shape: exports only sda_* symbols (among them the device, memory and config
# functions), links no libtorch, and has a versioned SONAME.
set -euo pipefail
lib=$1
fail=0
exports=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ {print $3}')
others=$(grep -v '^sda_' <<<"$exports" || true)
if [ -n "$others" ]; then
  echo "non-sda exports in $lib:"; echo "$others" | head -20; fail=1
fi
for f in sda_select_device sda_device_info sda_list_devices sda_memory_info sda_clear_cache \
         sda_reset_peak sda_config_new sda_config_load sda_config_load_str sda_config_save \
         sda_config_get sda_config_set sda_config_to_string sda_config_free sda_backend_load \
         sda_backend_info sda_status_str sda_last_error_message sda_version sda_set_log_callback; do
  grep -qx "$f" <<<"$exports" || { echo "missing export: $f"; fail=1; }
done
if ldd "$lib" | grep -i torch; then
  echo "$lib links libtorch"; fail=1
fi
soname=$(objdump -p "$lib" | awk '/SONAME/ {print $2}')
# The ABI version: libsda.so.<major> from 1.0 on, libsda.so.0.<minor> before it.
[[ "$soname" =~ ^libsda\.so\.([1-9][0-9]*|0\.[0-9]+)$ ]] || { echo "SONAME is '$soname', expected libsda.so.<major> or libsda.so.0.<minor>"; fail=1; }
echo "exports: $(wc -l <<<"$exports") sda_* symbols; SONAME $soname; no libtorch in ldd"
exit $fail
