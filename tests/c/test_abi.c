/*
 * The C ABI's contract, checked from C (and, through test_abi_cpp.cpp, from C++): NULL for every
 * pointer argument, invalid UTF-8, malformed device preferences, unknown keys, a malformed config file
 * left untouched, buffer sizes, fallbacks, and that nothing but an explicit backend load maps libtorch.
 */
#include <sda.h>

#include <stdlib.h>
#include <unistd.h>

#include "check.h"

static const char BAD_UTF8[] = {'c', 'p', (char)0xff, 'u', 0};

static int warnings_logged = 0;
static void count_warnings(void *user_data, sda_log_level level, const char *message) {
    int *counter = (int *)user_data;
    if (level == SDA_LOG_LEVEL_WARN && message && message[0]) (*counter)++;
}

static void test_status_and_version(void) {
    char expected[64];
    CHECK(strcmp(sda_status_str(SDA_OK), "SDA_OK") == 0);
    CHECK(strcmp(sda_status_str(SDA_ERR_BACKEND_UNAVAILABLE), "SDA_ERR_BACKEND_UNAVAILABLE") == 0);
    CHECK(strcmp(sda_status_str(12345), "SDA_UNKNOWN_STATUS") == 0);
    CHECK(sda_last_error_message() != NULL);
    snprintf(expected, sizeof expected, "%d.%d.%d", SDA_VERSION_MAJOR, SDA_VERSION_MINOR,
             SDA_VERSION_PATCH);
    CHECK(strcmp(sda_version(), expected) == 0);
    CHECK(strcmp(sda_version(), SDA_VERSION_STRING) == 0);
    CHECK(strcmp(sda_device_kind_str(SDA_DEVICE_KIND_CUDA), "cuda") == 0);
}

static void test_null_pointers(sda_config *config, sda_context *context) {
    sda_config *c = NULL;
    sda_context *x = NULL;
    sda_selection sel;
    SDA_SELECTION_INIT(&sel);
    sda_device_details dev;
    SDA_DEVICE_DETAILS_INIT(&dev);
    sda_memory_figures mem;
    SDA_MEMORY_FIGURES_INIT(&mem);
    sda_backend_details be;
    SDA_BACKEND_DETAILS_INIT(&be);
    char buf[64];
    size_t needed = 0, count = 0;

    CHECK_STATUS(sda_config_new(NULL), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_config_load(NULL, &c), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_config_load("x.toml", NULL), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_config_load_str(NULL, &c), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_config_load_str("", NULL), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_config_save(NULL, "x.toml"), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_config_save(config, NULL), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_config_get(NULL, "hardware.device", buf, sizeof buf, &needed), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_config_get(config, NULL, buf, sizeof buf, &needed), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_config_get(config, "hardware.device", NULL, sizeof buf, &needed), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_config_set(NULL, "hardware.device", "cpu"), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_config_set(config, NULL, "cpu"), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_config_set(config, "hardware.device", NULL), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_config_to_string(NULL, buf, sizeof buf, &needed), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_config_to_string(config, NULL, sizeof buf, &needed), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_config_free(NULL), SDA_OK);

    CHECK_STATUS(sda_context_new(config, NULL), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_context_free(NULL), SDA_OK);
    CHECK_STATUS(sda_select_device(NULL, "cpu", &sel), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_select_device(context, "cpu", NULL), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_device_info(NULL, &dev), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_device_info(context, NULL), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_list_devices(NULL, &dev, 1, &count), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_list_devices(context, &dev, 1, NULL), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_list_devices(context, NULL, 8, &count), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_memory_info(NULL, &mem), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_memory_info(context, NULL), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_clear_cache(NULL), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_reset_peak(NULL), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_backend_load(NULL), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_backend_info(NULL), SDA_ERR_NULL_POINTER);
    CHECK(strstr(sda_last_error_message(), "out_details") != NULL);
    /* NULL log callback = stop logging: valid. */
    CHECK_STATUS(sda_set_log_callback(NULL, NULL), SDA_OK);
    (void)x;
    (void)be;
}

static void test_invalid_utf8(sda_config *config, sda_context *context) {
    sda_config *c = NULL;
    sda_selection sel;
    SDA_SELECTION_INIT(&sel);
    char buf[64];
    CHECK_STATUS(sda_config_load(BAD_UTF8, &c), SDA_ERR_INVALID_UTF8);
    CHECK_MESSAGE_CONTAINS("path");
    CHECK_STATUS(sda_config_load_str(BAD_UTF8, &c), SDA_ERR_INVALID_UTF8);
    CHECK_STATUS(sda_config_get(config, BAD_UTF8, buf, sizeof buf, NULL), SDA_ERR_INVALID_UTF8);
    CHECK_STATUS(sda_config_set(config, BAD_UTF8, "cpu"), SDA_ERR_INVALID_UTF8);
    CHECK_STATUS(sda_config_set(config, "hardware.device", BAD_UTF8), SDA_ERR_INVALID_UTF8);
    CHECK_STATUS(sda_config_save(config, BAD_UTF8), SDA_ERR_INVALID_UTF8);
    CHECK_STATUS(sda_select_device(context, BAD_UTF8, &sel), SDA_ERR_INVALID_UTF8);
    CHECK_MESSAGE_CONTAINS("preference");
}

static void test_preferences(sda_context *context) {
    sda_selection sel;
    SDA_SELECTION_INIT(&sel);
    sda_device_details devices[16];
    SDA_DEVICE_DETAILS_INIT(&devices[0]);
    size_t count = 0;
    const char *malformed[] = {"", "   ", "tpu", "cuda:x", "cuda:", "cpu:0", "gpu"};
    size_t i;

    for (i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
        memset(&sel, 0x5a, sizeof sel);
        CHECK_STATUS(sda_select_device(context, malformed[i], &sel), SDA_ERR_INVALID_ARGUMENT);
        CHECK_MESSAGE_CONTAINS("accepted");
        CHECK(((unsigned char *)&sel)[0] == 0x5a); /* out-param untouched on failure */
    }

    CHECK_STATUS(sda_list_devices(context, devices, 16, &count), SDA_OK);
    CHECK(count >= 1 && devices[0].kind == SDA_DEVICE_KIND_CPU);

    CHECK_STATUS(sda_select_device(context, " CPU ", &sel), SDA_OK);
    CHECK(sel.kind == SDA_DEVICE_KIND_CPU && !sel.fell_back && strcmp(sel.device, "cpu") == 0);

    warnings_logged = 0;
    CHECK_STATUS(sda_select_device(context, "auto", &sel), SDA_OK);
    if (count == 1) { /* no GPU on this machine (CI): auto is the CPU, and that is not a fallback */
        CHECK(sel.kind == SDA_DEVICE_KIND_CPU);
        CHECK(warnings_logged == 0);
        CHECK(!sel.fell_back);
        CHECK(sel.reason[0] == 0);

        warnings_logged = 0;
        CHECK_STATUS(sda_select_device(context, "cuda", &sel), SDA_OK);
        CHECK(sel.kind == SDA_DEVICE_KIND_CPU && sel.fell_back);
        CHECK(strstr(sel.reason, "cuda") != NULL);
        CHECK(warnings_logged == 1);

        /* cuda:99 without any CUDA device: the same fallback as "cuda", with the reason. */
        CHECK_STATUS(sda_select_device(context, "cuda:99", &sel), SDA_OK);
        CHECK(sel.fell_back && strcmp(sel.requested, "cuda:99") == 0 && sel.reason[0] != 0);

        CHECK_STATUS(sda_select_device(context, "mps", &sel), SDA_OK);
        CHECK(sel.kind == SDA_DEVICE_KIND_CPU && sel.fell_back);
    } else {
        /* GPUs present: an index beyond them is an error, never a silent CPU. */
        CHECK_STATUS(sda_select_device(context, "cuda:99", &sel), SDA_ERR_INVALID_ARGUMENT);
        CHECK_MESSAGE_CONTAINS("cuda:99");
    }
}

static void test_strict_mode(void) {
    sda_config *config = NULL;
    sda_context *context = NULL;
    sda_selection sel;
    SDA_SELECTION_INIT(&sel);
    sda_device_details devices[16];
    SDA_DEVICE_DETAILS_INIT(&devices[0]);
    size_t count = 0;
    CHECK_STATUS(sda_config_load_str("[hardware]\nstrict = true\n", &config), SDA_OK);
    CHECK_STATUS(sda_context_new(config, &context), SDA_OK);
    CHECK_STATUS(sda_list_devices(context, devices, 16, &count), SDA_OK);
    if (count == 1) {
        CHECK_STATUS(sda_select_device(context, "cuda", &sel), SDA_ERR_DEVICE_UNAVAILABLE);
        CHECK_MESSAGE_CONTAINS("strict");
    }
    CHECK_STATUS(sda_select_device(context, "cpu", &sel), SDA_OK);
    sda_context_free(context);
    sda_config_free(config);
}

static void test_config_keys_and_buffers(sda_config *config) {
    char small[4];
    char buf[4096];
    size_t needed = 0;

    CHECK_STATUS(sda_config_get(config, "hardware.no_such_key", buf, sizeof buf, &needed), SDA_ERR_UNKNOWN_KEY);
    CHECK_MESSAGE_CONTAINS("hardware.no_such_key");
    CHECK_STATUS(sda_config_set(config, "nonsense.key", "1"), SDA_ERR_UNKNOWN_KEY);
    CHECK_MESSAGE_CONTAINS("nonsense.key");
    CHECK_STATUS(sda_config_set(config, "hardware.memory_fraction", "1.5"), SDA_ERR_INVALID_VALUE);
    CHECK_MESSAGE_CONTAINS("hardware.memory_fraction");
    CHECK_STATUS(sda_config_set(config, "hardware.device", "tpu"), SDA_ERR_INVALID_VALUE);
    CHECK_STATUS(sda_config_set(config, "hardware.memory_strategy", "reckless"), SDA_ERR_INVALID_VALUE);
    CHECK_MESSAGE_CONTAINS("conservative");

    CHECK_STATUS(sda_config_set(config, "hardware.memory_strategy", "aggressive"), SDA_OK);
    CHECK_STATUS(sda_config_get(config, "hardware.memory_strategy", buf, sizeof buf, &needed), SDA_OK);
    CHECK(strcmp(buf, "aggressive") == 0 && needed == strlen("aggressive") + 1);

    /* Too small: SDA_ERR_BUFFER_TOO_SMALL, *needed tells the size, the buffer is not written. */
    memset(small, 'z', sizeof small);
    needed = 0;
    CHECK_STATUS(sda_config_get(config, "hardware.memory_strategy", small, sizeof small, &needed),
                 SDA_ERR_BUFFER_TOO_SMALL);
    CHECK(needed == strlen("aggressive") + 1);
    CHECK(small[0] == 'z');
    /* Size query. */
    needed = 0;
    CHECK_STATUS(sda_config_to_string(config, NULL, 0, &needed), SDA_ERR_BUFFER_TOO_SMALL);
    CHECK(needed > 10 && needed <= sizeof buf);
    CHECK_STATUS(sda_config_to_string(config, buf, needed, &needed), SDA_OK);
    CHECK(strstr(buf, "memory_strategy = \"aggressive\"") != NULL);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static int file_equals(const char *path, const char *text) {
    char buf[4096];
    size_t n;
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strcmp(buf, text) == 0;
}

static void test_config_files(void) {
    char dir[] = "/tmp/sda_test_XXXXXX";
    char path[256], good[256];
    const char *malformed = "[hardware\ndevice = \"cuda\n";
    sda_config *config = NULL, *loaded = NULL;
    char buf[64];

    if (!mkdtemp(dir)) {
        CHECK(!"mkdtemp failed");
        return;
    }
    snprintf(path, sizeof path, "%s/broken.toml", dir);
    snprintf(good, sizeof good, "%s/paths/../good.toml", dir);
    write_file(path, malformed);

    /* A malformed file fails to load, and a save over it is refused: the bytes stay as they were. */
    CHECK_STATUS(sda_config_load(path, &loaded), SDA_ERR_PARSE);
    CHECK(loaded == NULL);
    CHECK_STATUS(sda_config_new(&config), SDA_OK);
    CHECK(sda_config_save(config, path) != SDA_OK);
    CHECK(file_equals(path, malformed));

    /* A missing file is an I/O error naming the path. */
    snprintf(buf, sizeof buf, "%s/missing.toml", dir);
    CHECK_STATUS(sda_config_load(buf, &loaded), SDA_ERR_IO);
    CHECK_MESSAGE_CONTAINS("missing.toml");

    /* Save, load back, relative paths kept as written. */
    snprintf(good, sizeof good, "%s/good.toml", dir);
    CHECK_STATUS(sda_config_set(config, "paths.models", "../models/here"), SDA_OK);
    CHECK_STATUS(sda_config_save(config, good), SDA_OK);
    CHECK_STATUS(sda_config_load(good, &loaded), SDA_OK);
    CHECK_STATUS(sda_config_get(loaded, "paths.models", buf, sizeof buf, NULL), SDA_OK);
    CHECK(strcmp(buf, "../models/here") == 0);

    /* Handles: double free is detected, not a crash. */
    CHECK_STATUS(sda_config_free(loaded), SDA_OK);
    CHECK_STATUS(sda_config_free(loaded), SDA_ERR_INVALID_HANDLE);
    CHECK_STATUS(sda_config_get(loaded, "paths.models", buf, sizeof buf, NULL), SDA_ERR_INVALID_HANDLE);
    CHECK_STATUS(sda_config_free(config), SDA_OK);
    unlink(path);
    unlink(good);
    rmdir(dir);
}

static void test_info_and_memory(sda_context *context) {
    sda_selection sel;
    SDA_SELECTION_INIT(&sel);
    sda_device_details dev;
    SDA_DEVICE_DETAILS_INIT(&dev);
    sda_memory_figures mem;
    SDA_MEMORY_FIGURES_INIT(&mem);
    CHECK_STATUS(sda_select_device(context, "cpu", &sel), SDA_OK);
    CHECK_STATUS(sda_device_info(context, &dev), SDA_OK);
    CHECK(dev.kind == SDA_DEVICE_KIND_CPU && dev.name[0] != 0);
    CHECK(dev.memory_total > 0 && dev.memory_free > 0 && dev.memory_free <= dev.memory_total);
    CHECK(dev.compute_capability_major == -1);
    CHECK_STATUS(sda_memory_info(context, &mem), SDA_OK);
    CHECK(mem.total > 0 && mem.budget > 0 && mem.budget <= mem.free);
    CHECK(mem.process_resident > 0);
    CHECK_STATUS(sda_clear_cache(context), SDA_OK);
    CHECK_STATUS(sda_reset_peak(context), SDA_OK);
}

int main(void) {
    sda_config *config = NULL;
    sda_context *context = NULL;
    sda_backend_details backend;
    SDA_BACKEND_DETAILS_INIT(&backend);

    /* Never inherit a device override from the environment running the tests. */
    unsetenv("SDA_DEVICE");
    unsetenv("SDA_CONFIG");
    CHECK_STATUS(sda_set_log_callback(count_warnings, &warnings_logged), SDA_OK);
    test_status_and_version();
    CHECK_STATUS(sda_config_new(&config), SDA_OK);
    CHECK_STATUS(sda_context_new(config, &context), SDA_OK);

    test_null_pointers(config, context);
    CHECK_STATUS(sda_set_log_callback(count_warnings, &warnings_logged), SDA_OK);
    test_invalid_utf8(config, context);
    test_preferences(context);
    test_strict_mode();
    test_config_keys_and_buffers(config);
    test_config_files();
    test_info_and_memory(context);

    /* Config, cpu selection, device info and memory info never map libtorch. */
    CHECK(mapped("libtorch") == 0);
    CHECK_STATUS(sda_backend_info(&backend), SDA_OK);
    CHECK(!backend.loaded);
    CHECK(backend.libtorch_found_by[0] == 0 && backend.libtorch_preloaded == 0);

    /* An explicit load maps it, and reports what it loaded. */
    CHECK_STATUS(sda_backend_load(context), SDA_OK);
    CHECK(mapped("libtorch_cpu.so") == 1);
    CHECK_STATUS(sda_backend_info(&backend), SDA_OK);
    CHECK(backend.loaded);
    CHECK(strcmp(backend.built_libtorch_version, "2.13.0") == 0);
    CHECK(strstr(backend.libtorch_path, "libtorch_cpu.so") != NULL);
    CHECK(strstr(backend.module_path, "libsda_torch.so") != NULL);
    /* This program links no libtorch: the one the backend runs on was found by a discovery step
       (named, NUL-terminated) and loaded for it, not already in the process. */
    CHECK(backend.libtorch_found_by[0] != 0);
    CHECK(memchr(backend.libtorch_found_by, 0, sizeof backend.libtorch_found_by) != NULL);
    CHECK(strcmp(backend.libtorch_found_by, "mapped") != 0);
    CHECK(strcmp(backend.libtorch_found_by, "SDA_LIBTORCH") == 0 ||
          strcmp(backend.libtorch_found_by, "hardware.libtorch") == 0 ||
          strcmp(backend.libtorch_found_by, "bundled") == 0 ||
          strcmp(backend.libtorch_found_by, "built") == 0);
    CHECK(backend.libtorch_preloaded == 0);
    test_info_and_memory(context); /* still works, now with torch figures */

    CHECK_STATUS(sda_context_free(context), SDA_OK);
    CHECK_STATUS(sda_context_free(context), SDA_ERR_INVALID_HANDLE);
    CHECK_STATUS(sda_config_free(config), SDA_OK);
    sda_set_log_callback(NULL, NULL);
    return check_report("test_abi");
}
