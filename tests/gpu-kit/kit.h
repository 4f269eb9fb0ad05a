/*
 * kit.h — what the GPU truth kit's C checks share (GPU.md; built by scripts/gpu-kit.sh).
 *
 * Every check prints one line on stdout, `CHECK <id> PASS|FAIL <detail>`, which run.sh collects into
 * its table; everything else a program prints is for the log. The programs are compiled here against
 * include/sda.h and run on the GPU machine, found through the rpath $ORIGIN/../lib.
 */
#ifndef SDA_GPU_KIT_H
#define SDA_GPU_KIT_H

#include <sda.h>

#include <dirent.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KIT_MIB (1024.0 * 1024.0)
#define KIT_GIB (1024.0 * 1024.0 * 1024.0)

static int kit_failures = 0;

/* One line of the table. */
static inline void kit_check(const char *id, int pass, const char *format, ...) {
    va_list args;
    printf("CHECK %s %s ", id, pass ? "PASS" : "FAIL");
    va_start(args, format);
    vprintf(format, args);
    va_end(args);
    printf("\n");
    fflush(stdout);
    if (!pass) kit_failures++;
}

static inline double kit_mib(uint64_t bytes) { return (double)bytes / KIT_MIB; }
static inline double kit_gib(uint64_t bytes) { return (double)bytes / KIT_GIB; }

static inline double kit_now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* A context from the defaults, or from a TOML text (e.g. a memory strategy); NULL on failure, with
 * the reason printed. */
static inline sda_context *kit_context(const char *toml) {
    sda_config *config = NULL;
    sda_context *context = NULL;
    sda_status status = toml ? sda_config_load_str(toml, &config) : sda_config_new(&config);
    if (status != SDA_OK) {
        printf("config: %s: %s\n", sda_status_str(status), sda_last_error_message());
        return NULL;
    }
    status = sda_context_new(config, &context);
    if (status != SDA_OK) {
        printf("context: %s: %s\n", sda_status_str(status), sda_last_error_message());
        context = NULL;
    }
    sda_config_free(config);
    return context;
}

/* Selects `preference`; returns the status and fills `selection`. */
static inline sda_status kit_select(const sda_context *context, const char *preference,
                             sda_selection *selection) {
    SDA_SELECTION_INIT(selection);
    return sda_select_device(context, preference, selection);
}

static inline sda_status kit_memory(const sda_context *context, sda_memory_figures *figures) {
    SDA_MEMORY_FIGURES_INIT(figures);
    return sda_memory_info(context, figures);
}

/* Runs `command` through the shell and keeps up to `capacity - 1` bytes of its stdout; returns the
 * exit status (-1 when it could not run). */
static inline int kit_capture(const char *command, char *out, size_t capacity) {
    FILE *pipe = popen(command, "r");
    size_t used = 0;
    if (capacity > 0) out[0] = '\0';
    if (!pipe) return -1;
    while (capacity > 0 && used + 1 < capacity) {
        size_t n = fread(out + used, 1, capacity - 1 - used, pipe);
        if (n == 0) break;
        used += n;
    }
    if (capacity > 0) out[used] = '\0';
    {
        char sink[256];
        while (fread(sink, 1, sizeof sink, pipe) > 0) {
        }
    }
    int status = pclose(pipe);
    return status == -1 ? -1 : (status >> 8) & 0xff;
}

static inline void kit_trim(char *s) {
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    size_t start = strspn(s, " \t");
    if (start > 0) memmove(s, s + start, n - start + 1);
}

/* 1 when a line of /proc/self/maps contains `needle`. */
static inline int kit_maps_contain(const char *needle) {
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[4096];
    int found = 0;
    if (!maps) return 0;
    while (!found && fgets(line, sizeof line, maps))
        if (strstr(line, needle)) found = 1;
    fclose(maps);
    return found;
}

/* 1 when /proc/self/maps maps a GPU device node, /dev/nvidia<N> (what a CUDA context maps; the driver's
 * initialisation alone maps at most /dev/nvidiactl and /dev/nvidia-uvm). */
static inline int kit_maps_gpu_node(void) {
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[4096];
    int found = 0;
    if (!maps) return 0;
    while (!found && fgets(line, sizeof line, maps)) {
        const char *at = strstr(line, "/dev/nvidia");
        if (at && at[11] >= '0' && at[11] <= '9') found = 1;
    }
    fclose(maps);
    return found;
}

/* Names of the open file descriptors whose target starts with `prefix` (e.g. "/dev/nvidia"),
 * comma-separated into `out`; returns how many. */
static inline int kit_fds_to(const char *prefix, char *out, size_t capacity) {
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *entry;
    int count = 0;
    if (capacity > 0) out[0] = '\0';
    if (!dir) return 0;
    while ((entry = readdir(dir))) {
        char path[300], target[512];
        ssize_t n;
        if (entry->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "/proc/self/fd/%s", entry->d_name);
        n = readlink(path, target, sizeof target - 1);
        if (n <= 0) continue;
        target[n] = '\0';
        if (strncmp(target, prefix, strlen(prefix)) != 0) continue;
        if (!strstr(out, target) && strlen(out) + strlen(target) + 2 < capacity) {
            if (out[0]) strcat(out, ",");
            strcat(out, target);
        }
        count++;
    }
    closedir(dir);
    return count;
}

/* 1 when nvidia-smi lists this process among the GPU's compute processes (it holds a CUDA context),
 * 0 when not, -1 when nvidia-smi could not be asked. */
static inline int kit_pid_has_cuda_context(void) {
    char out[8192], *line, *save = NULL;
    int rc = kit_capture("nvidia-smi --query-compute-apps=pid --format=csv,noheader 2>/dev/null", out,
                         sizeof out);
    long me = (long)getpid();
    if (rc != 0) return -1;
    for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
        if (strtol(line, NULL, 10) == me) return 1;
    return 0;
}

/* What the process holds of CUDA, in words (for the cpu check and its positive control). */
typedef struct {
    int libtorch_cuda; /* libtorch_cuda.so is mapped */
    int libcuda;       /* the driver library libcuda.so is mapped (no context by itself) */
    int device_maps;   /* /dev/nvidia<N> is mapped (a context maps the device) */
    int control_maps;  /* /dev/nvidiactl or /dev/nvidia-uvm is mapped (the driver is initialised) */
    int in_compute_apps; /* nvidia-smi lists the pid (1), does not (0), cannot tell (-1) */
    char fds[512];     /* open /dev/nvidia* descriptors */
} kit_cuda_evidence;

static inline kit_cuda_evidence kit_cuda_state(void) {
    kit_cuda_evidence e;
    memset(&e, 0, sizeof e);
    e.libtorch_cuda = kit_maps_contain("libtorch_cuda.so");
    e.libcuda = kit_maps_contain("libcuda.so");
    e.device_maps = kit_maps_gpu_node();
    e.control_maps = kit_maps_contain("/dev/nvidiactl") || kit_maps_contain("/dev/nvidia-uvm");
    e.in_compute_apps = kit_pid_has_cuda_context();
    kit_fds_to("/dev/nvidia", e.fds, sizeof e.fds);
    return e;
}

static inline void kit_describe_cuda(const kit_cuda_evidence *e, char *out, size_t capacity) {
    snprintf(out, capacity,
             "libtorch_cuda %s, libcuda %s, /dev/nvidia<N> mapped %s, /dev/nvidiactl|uvm mapped %s, "
             "in nvidia-smi compute apps %s, open fds [%s]",
             e->libtorch_cuda ? "mapped" : "not mapped", e->libcuda ? "mapped" : "not mapped",
             e->device_maps ? "yes" : "no", e->control_maps ? "yes" : "no",
             e->in_compute_apps < 0 ? "unknown" : e->in_compute_apps ? "yes" : "no", e->fds);
}

#endif /* SDA_GPU_KIT_H */
