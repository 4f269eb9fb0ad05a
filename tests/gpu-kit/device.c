/*
 * Check 2 of the GPU truth kit (GPU.md): sda_device_info of cuda:0 against
 * `nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap` (and the "CUDA Version" of
 * nvidia-smi's banner, which is the driver API version libsda reports as cuda_driver_version).
 *
 * With CUDA_VISIBLE_DEVICES set, the first entry names the GPU for nvidia-smi (which ignores it);
 * run.sh sets CUDA_DEVICE_ORDER=PCI_BUS_ID so that both count in the same order.
 */
#include "kit.h"

#include <math.h>

/* Splits nvidia-smi's "a, b, c" line into at most `max` trimmed fields. */
static int split_csv(char *line, char **fields, int max) {
    int n = 0;
    char *save = NULL;
    for (char *f = strtok_r(line, ",", &save); f && n < max; f = strtok_r(NULL, ",", &save)) {
        kit_trim(f);
        fields[n++] = f;
    }
    return n;
}

int main(void) {
    char gpu[128] = "0", command[512], out[4096], banner[16384];
    const char *visible = getenv("CUDA_VISIBLE_DEVICES");
    if (visible && visible[0]) {
        snprintf(gpu, sizeof gpu, "%s", visible);
        gpu[strcspn(gpu, ",")] = '\0';
        kit_trim(gpu);
    }

    sda_context *context = kit_context(NULL);
    sda_selection selection;
    sda_device_details device;
    SDA_DEVICE_DETAILS_INIT(&device);
    sda_status status = context ? kit_select(context, "cuda:0", &selection) : SDA_ERR_PANIC;
    if (status == SDA_OK) status = sda_device_info(context, &device);
    if (status != SDA_OK || device.kind != SDA_DEVICE_KIND_CUDA) {
        const char *why = status != SDA_OK ? sda_last_error_message() : "the selected device is not cuda";
        const char *ids[] = {"2.name", "2.memory", "2.driver", "2.compute_cap", "2.count"};
        for (int i = 0; i < 5; i++)
            kit_check(ids[i], 0, "cuda:0 not described: %s: %s", sda_status_str(status), why);
        sda_context_free(context);
        return 1;
    }
    printf("libsda: name=%s total=%" PRIu64 " free=%" PRIu64 " cc=%d.%d driver(cuda)=%s runtime=%s count=%u\n",
           device.name, device.memory_total, device.memory_free, device.compute_capability_major,
           device.compute_capability_minor, device.cuda_driver_version, device.cuda_runtime_version,
           device.device_count);

    snprintf(command, sizeof command,
             "nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap "
             "--format=csv,noheader,nounits -i '%s' 2>&1",
             gpu);
    int rc = kit_capture(command, out, sizeof out);
    printf("nvidia-smi -i %s: %s", gpu, out);
    char *fields[4] = {"", "", "", ""};
    char line[4096];
    snprintf(line, sizeof line, "%s", out);
    line[strcspn(line, "\n")] = '\0';
    int n = rc == 0 ? split_csv(line, fields, 4) : 0;
    if (n < 4) {
        const char *ids[] = {"2.name", "2.memory", "2.driver", "2.compute_cap"};
        for (int i = 0; i < 4; i++)
            kit_check(ids[i], 0, "nvidia-smi gave no usable answer (rc %d): %s", rc, out);
    } else {
        kit_check("2.name", strcmp(device.name, fields[0]) == 0, "libsda \"%s\", nvidia-smi \"%s\"",
                  device.name, fields[0]);

        double smi_total = strtod(fields[1], NULL) * KIT_MIB;
        double off = smi_total > 0 ? fabs((double)device.memory_total - smi_total) / smi_total : 1.0;
        kit_check("2.memory", off <= 0.01, "total: libsda %.0f MiB, nvidia-smi %s MiB (%.3f %% apart; within 1 %%)",
                  kit_mib(device.memory_total), fields[1], off * 100.0);

        char cc[32];
        snprintf(cc, sizeof cc, "%d.%d", device.compute_capability_major, device.compute_capability_minor);
        kit_check("2.compute_cap", strcmp(cc, fields[3]) == 0, "libsda %s, nvidia-smi %s", cc, fields[3]);

        /* libsda's cuda_driver_version is the driver API's version (cuDriverGetVersion, "12.8"); the
         * kernel driver's own number (nvidia-smi driver_version, "570.86.15") is not in the C ABI. The
         * banner of plain `nvidia-smi` prints the same driver API version as "CUDA Version: 12.8". */
        char cuda_version[32] = "";
        kit_capture("nvidia-smi 2>&1", banner, sizeof banner);
        const char *at = strstr(banner, "CUDA Version:");
        if (at) {
            sscanf(at + strlen("CUDA Version:"), " %31[0-9.]", cuda_version);
        }
        kit_check("2.driver", cuda_version[0] && strcmp(cuda_version, device.cuda_driver_version) == 0,
                  "CUDA driver API: libsda %s, nvidia-smi banner \"CUDA Version: %s\"; kernel driver %s "
                  "(nvidia-smi driver_version; libsda does not report it); libtorch's CUDA runtime %s",
                  device.cuda_driver_version[0] ? device.cuda_driver_version : "(empty)",
                  cuda_version[0] ? cuda_version : "?", fields[2],
                  device.cuda_runtime_version[0] ? device.cuda_runtime_version : "(empty)");
    }

    int expected = 0;
    if (visible && visible[0]) {
        expected = 1;
        for (const char *p = visible; *p; p++) expected += *p == ',';
    } else if (kit_capture("nvidia-smi -L 2>/dev/null", banner, sizeof banner) == 0) {
        for (char *p = banner; (p = strstr(p, "GPU ")) != NULL; p += 4)
            if (p == banner || p[-1] == '\n') expected++;
    }
    kit_check("2.count", expected > 0 && (int)device.device_count == expected,
              "libsda counts %u CUDA devices, nvidia-smi -L (or CUDA_VISIBLE_DEVICES) %d",
              device.device_count, expected);
    sda_context_free(context);
    return kit_failures ? 1 : 0;
}
