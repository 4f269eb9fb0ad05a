/*
 * select_device.c — what a host does with libsda at start-up:
 * create a config, select a device, print what it is and how much memory it has, free everything.
 *
 *   usage: select_device [PREFERENCE]      (default: the config's hardware.device, i.e. "auto")
 *
 * Build against an installed libsda:  cc select_device.c $(pkg-config --cflags --libs sda)
 */
#include <sda.h>

#include <inttypes.h>
#include <stdio.h>

/* Print libsda's warnings (e.g. "cuda unavailable, using cpu: ...") the host's way. */
static void on_log(void *user_data, sda_log_level level, const char *message) {
    (void)user_data;
    if (level <= SDA_LOG_LEVEL_WARN) fprintf(stderr, "[libsda] %s\n", message);
}

static int fail(const char *what, sda_status status) {
    fprintf(stderr, "%s failed: %s: %s\n", what, sda_status_str(status), sda_last_error_message());
    return 1;
}

int main(int argc, char **argv) {
    const char *preference = argc > 1 ? argv[1] : NULL; /* NULL = the config's hardware.device */
    sda_config *config = NULL;
    sda_context *context = NULL;
    sda_selection selection;
    SDA_SELECTION_INIT(&selection);
    sda_device_details device;
    SDA_DEVICE_DETAILS_INIT(&device);
    sda_memory_figures memory;
    SDA_MEMORY_FIGURES_INIT(&memory);
    sda_status status;
    int exit_code = 1;

    sda_set_log_callback(on_log, NULL);

    if ((status = sda_config_new(&config)) != SDA_OK) return fail("sda_config_new", status);
    if ((status = sda_context_new(config, &context)) != SDA_OK) {
        exit_code = fail("sda_context_new", status);
        goto done;
    }
    if ((status = sda_select_device(context, preference, &selection)) != SDA_OK) {
        exit_code = fail("sda_select_device", status);
        goto done;
    }
    if ((status = sda_device_info(context, &device)) != SDA_OK) {
        exit_code = fail("sda_device_info", status);
        goto done;
    }
    if ((status = sda_memory_info(context, &memory)) != SDA_OK) {
        exit_code = fail("sda_memory_info", status);
        goto done;
    }

    printf("libsda %s\n", sda_version());
    printf("device:   %s (%s)%s\n", selection.device, device.name,
           selection.fell_back ? " [fell back]" : "");
    if (selection.fell_back) printf("reason:   %s\n", selection.reason);
    printf("memory:   %" PRIu64 " MiB free of %" PRIu64 " MiB\n", device.memory_free >> 20,
           device.memory_total >> 20);
    printf("budget:   %" PRIu64 " MiB\n", memory.budget >> 20);
    printf("bf16/fp16: %s/%s\n", device.bf16_supported ? "yes" : "no",
           device.fp16_supported ? "yes" : "no");
    exit_code = 0;

done:
    sda_context_free(context);
    sda_config_free(config);
    return exit_code;
}
