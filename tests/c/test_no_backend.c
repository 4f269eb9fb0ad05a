/*
 * libsda without its torch backend (the module moved away, or never installed): loading the backend
 * is SDA_ERR_BACKEND_UNAVAILABLE with a message that names what was looked for and the fix, and
 * everything that needs no torch keeps working. Run from a directory holding only this program and
 * libsda.so (see no_backend.sh).
 */
#include <sda.h>

#include <stdlib.h>

#include "check.h"

int main(void) {
    sda_config *config = NULL;
    sda_context *context = NULL;
    sda_selection sel;
    SDA_SELECTION_INIT(&sel);
    sda_device_details dev;
    SDA_DEVICE_DETAILS_INIT(&dev);
    sda_memory_figures mem;
    SDA_MEMORY_FIGURES_INIT(&mem);
    char buf[64];

    unsetenv("SDA_BACKEND");
    unsetenv("SDA_DEVICE");
    CHECK_STATUS(sda_config_new(&config), SDA_OK);
    CHECK_STATUS(sda_context_new(config, &context), SDA_OK);
    CHECK_STATUS(sda_backend_load(context), SDA_ERR_BACKEND_UNAVAILABLE);
    CHECK_MESSAGE_CONTAINS("libsda_torch.so");
    CHECK_MESSAGE_CONTAINS("SDA_BACKEND");
    CHECK_MESSAGE_CONTAINS("hardware.backend");
    printf("message: %s\n", sda_last_error_message());

    /* Everything that needs no torch still works. */
    CHECK_STATUS(sda_config_get(config, "hardware.device", buf, sizeof buf, NULL), SDA_OK);
    CHECK_STATUS(sda_select_device(context, "auto", &sel), SDA_OK);
    CHECK(sel.kind == SDA_DEVICE_KIND_CPU);
    CHECK_STATUS(sda_select_device(context, "cpu", &sel), SDA_OK);
    CHECK_STATUS(sda_device_info(context, &dev), SDA_OK);
    CHECK_STATUS(sda_memory_info(context, &mem), SDA_OK);
    CHECK_STATUS(sda_clear_cache(context), SDA_OK);
    /* A second attempt fails the same way (failures are not cached as success). */
    CHECK_STATUS(sda_backend_load(context), SDA_ERR_BACKEND_UNAVAILABLE);
    CHECK(mapped("libtorch") == 0);

    sda_context_free(context);
    sda_config_free(config);
    return check_report("test_no_backend");
}
