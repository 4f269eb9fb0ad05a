/*
 * host.c: a minimal libsda host, built by tests/install/run.sh against an installed prefix (with
 * CMake's sda::sda and sda::static, and with pkg-config). It checks what an installed copy must get
 * right by itself, without LD_LIBRARY_PATH: header and library agree, a device is selected, and the
 * torch backend module is found and loaded. The test compares the backend path it prints with the
 * prefix.
 */
#include <sda.h>

#include <stdio.h>
#include <string.h>

static int fail(const char *what, sda_status status) {
    fprintf(stderr, "%s failed: %s: %s\n", what, sda_status_str(status), sda_last_error_message());
    return 1;
}

int main(void) {
    sda_context *context = NULL;
    sda_selection selection;
    sda_backend_details backend;
    sda_status status;
    int exit_code = 1;
    SDA_SELECTION_INIT(&selection);
    SDA_BACKEND_DETAILS_INIT(&backend);

    printf("libsda %s (header %s)\n", sda_version(), SDA_VERSION_STRING);
    if (strcmp(sda_version(), SDA_VERSION_STRING) != 0) {
        fprintf(stderr, "header and library versions differ\n");
        return 1;
    }
    if ((status = sda_context_new(NULL, &context)) != SDA_OK) return fail("sda_context_new", status);
    if ((status = sda_select_device(context, "cpu", &selection)) != SDA_OK) {
        exit_code = fail("sda_select_device", status);
        goto done;
    }
    printf("device: %s\n", selection.device);
    if ((status = sda_backend_load(context)) != SDA_OK) {
        exit_code = fail("sda_backend_load", status);
        goto done;
    }
    if ((status = sda_backend_info(&backend)) != SDA_OK) {
        exit_code = fail("sda_backend_info", status);
        goto done;
    }
    printf("backend: %s\n", backend.module_path);
    printf("libtorch: %s (%s)\n", backend.libtorch_path, backend.libtorch_version);
    exit_code = 0;

done:
    sda_context_free(context);
    return exit_code;
}
