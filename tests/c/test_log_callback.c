/*
 * The log callback's lifetime guarantee, tried as a host would (issue "host safety", item 1):
 *
 * 1. Three threads call sda_select_device(ctx, "mps") in a loop (on Linux there is no MPS, so each
 *    call falls back to the CPU and logs a warning, GPU or not) while the main
 *    thread, many times over, installs the callback with a fresh malloc'ed user_data, removes it with
 *    sda_set_log_callback(NULL, NULL), marks the user_data dead and frees it. When
 *    sda_set_log_callback returns, no call of the previous callback may be running or start: a
 *    callback that sees a dead user_data (or, under AddressSanitizer, touches freed memory) fails
 *    the test.
 * 2. A callback that calls back into libsda (selects a device, which logs; loads the backend, which
 *    logs while loading; replaces the callback) neither deadlocks nor recurses without end: messages
 *    logged from inside the callback on its own thread are not delivered to it again (the header
 *    says so). The first backend load happens with that callback installed, so the loader's own
 *    messages reach a callback that loads the backend. An alarm turns a deadlock into a failure
 *    instead of a hang.
 */
#include <sda.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

enum { SELECTING_THREADS = 3, ROUNDS = 300 };

/* What a callback registration owns: the host frees it right after unregistering. */
typedef struct {
    atomic_int alive;
    atomic_long messages;
} host_state;

static atomic_int stop_selecting;
static atomic_long calls_on_dead_state;
static atomic_long messages_total;
static const sda_context *shared_ctx;

static void pause_briefly(void) {
    /* Widens the window in which a replacement races a running callback. */
    struct timespec t = {0, 20000};
    nanosleep(&t, NULL);
}

static void counting_callback(void *user_data, sda_log_level level, const char *message) {
    (void)level;
    (void)message;
    host_state *state = (host_state *)user_data;
    if (atomic_load(&state->alive) != 1) atomic_fetch_add(&calls_on_dead_state, 1);
    atomic_fetch_add(&state->messages, 1);
    pause_briefly();
    if (atomic_load(&state->alive) != 1) atomic_fetch_add(&calls_on_dead_state, 1);
    atomic_fetch_add(&messages_total, 1);
}

static void *select_in_a_loop(void *unused) {
    (void)unused;
    while (!atomic_load(&stop_selecting)) {
        sda_selection selection;
        SDA_SELECTION_INIT(&selection);
        /* Falls back to the CPU with a warning: there is no MPS on Linux. */
        (void)sda_select_device(shared_ctx, "mps", &selection);
    }
    return NULL;
}

static void replaced_callback_is_never_called_after_the_replacement_returns(void) {
    pthread_t threads[SELECTING_THREADS];
    atomic_store(&stop_selecting, 0);
    for (int i = 0; i < SELECTING_THREADS; i++) pthread_create(&threads[i], NULL, select_in_a_loop, NULL);
    for (int round = 0; round < ROUNDS; round++) {
        host_state *state = (host_state *)malloc(sizeof *state);
        atomic_store(&state->alive, 1);
        atomic_store(&state->messages, 0);
        CHECK_STATUS(sda_set_log_callback(counting_callback, state), SDA_OK);
        pause_briefly();
        CHECK_STATUS(sda_set_log_callback(NULL, NULL), SDA_OK);
        /* The guarantee: nothing calls the old callback from here on. */
        atomic_store(&state->alive, 0);
        pause_briefly();
        free(state);
    }
    atomic_store(&stop_selecting, 1);
    for (int i = 0; i < SELECTING_THREADS; i++) pthread_join(threads[i], NULL);
    printf("log race: %ld messages delivered, %ld calls on a released user_data\n",
           atomic_load(&messages_total), atomic_load(&calls_on_dead_state));
    CHECK(atomic_load(&calls_on_dead_state) == 0);
    /* The race was real: the callback did run while the threads selected. */
    CHECK(atomic_load(&messages_total) > 0);
}

static atomic_int reentrant_depth;
static atomic_int reentrant_max_depth;
static atomic_long reentrant_calls;

static void reentrant_callback(void *user_data, sda_log_level level, const char *message) {
    (void)user_data;
    (void)level;
    (void)message;
    int depth = atomic_fetch_add(&reentrant_depth, 1) + 1;
    if (depth > atomic_load(&reentrant_max_depth)) atomic_store(&reentrant_max_depth, depth);
    atomic_fetch_add(&reentrant_calls, 1);
    sda_selection selection;
    SDA_SELECTION_INIT(&selection);
    /* Each of these logs (a fallback warning, the backend being loaded) from inside the callback. */
    (void)sda_select_device(shared_ctx, "mps", &selection);
    (void)sda_backend_load(shared_ctx);
    /* Replacing the callback from inside itself must not wait for itself. */
    (void)sda_set_log_callback(reentrant_callback, NULL);
    atomic_fetch_sub(&reentrant_depth, 1);
}

static void on_alarm(int sig) {
    (void)sig;
    static const char text[] = "test_log_callback: a callback calling back into libsda deadlocked\n";
    ssize_t ignored = write(2, text, sizeof text - 1);
    (void)ignored;
    _exit(3);
}

static void a_callback_may_call_back_into_libsda(void) {
    signal(SIGALRM, on_alarm);
    alarm(120);
    CHECK_STATUS(sda_set_log_callback(reentrant_callback, NULL), SDA_OK);
    /* The first load of the backend in this process: the loader logs while it loads. */
    CHECK_STATUS(sda_backend_load(shared_ctx), SDA_OK);
    sda_selection selection;
    SDA_SELECTION_INIT(&selection);
    CHECK_STATUS(sda_select_device(shared_ctx, "mps", &selection), SDA_OK);
    CHECK_STATUS(sda_set_log_callback(NULL, NULL), SDA_OK);
    alarm(0);
    printf("reentrant: %ld calls, deepest nesting %d\n", atomic_load(&reentrant_calls),
           atomic_load(&reentrant_max_depth));
    CHECK(atomic_load(&reentrant_calls) >= 1);
    CHECK(atomic_load(&reentrant_max_depth) == 1);
}

int main(void) {
    sda_config *config = NULL;
    sda_context *ctx = NULL;
    CHECK_STATUS(sda_config_new(&config), SDA_OK);
    CHECK_STATUS(sda_context_new(config, &ctx), SDA_OK);
    shared_ctx = ctx;
    replaced_callback_is_never_called_after_the_replacement_returns();
    a_callback_may_call_back_into_libsda();
    CHECK_STATUS(sda_context_free(ctx), SDA_OK);
    CHECK_STATUS(sda_config_free(config), SDA_OK);
    return check_report("log_callback");
}
