/*
 * Start-up benchmark, libsda side: a whole process that selects the CPU and prints its description —
 * what a plugin pays to ask libsda "which device?". With --load-backend it also loads the torch
 * backend (libtorch), to compare with a program that links libtorch directly.
 */
#include <sda.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    int load_backend = argc > 1 && strcmp(argv[1], "--load-backend") == 0;
    sda_context *context = NULL;
    sda_selection selection;
    sda_device_details device;
    SDA_SELECTION_INIT(&selection);
    SDA_DEVICE_DETAILS_INIT(&device);
    if (sda_context_new(NULL, &context) != SDA_OK) return 1;
    if (sda_select_device(context, "cpu", &selection) != SDA_OK) return 1;
    if (sda_device_info(context, &device) != SDA_OK) return 1;
    if (load_backend && sda_backend_load(context) != SDA_OK) {
        fprintf(stderr, "%s\n", sda_last_error_message());
        return 1;
    }
    printf("%s %s %" PRIu64 "\n", selection.device, device.name, device.memory_free);
    sda_context_free(context);
    return 0;
}
