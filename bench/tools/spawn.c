/* The bare spawn loop of bench/run.sh: THREADS threads that each, for SECONDS, posix_spawn `cat`
 * with piped stdin and stdout, write 13 bytes, read them back and waitpid. What a fork-per-request
 * server does per request minus all HTTP work, with nothing else around it: its rate is the spawn
 * ceiling of this machine, and its own CPU per spawn (getrusage RUSAGE_SELF: all threads, the
 * reaped children excluded) the floor for a watchdog's CPU per request.
 *
 * Prints: spawns=N seconds=S cpu_us_per_spawn=C per_s=R
 * Build: cc -O2 -pthread -o spawn spawn.c */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static const char BODY[] = "Hello, World!";
static double deadline;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int round_trip(void) {
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC)) return -1;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in[0], 0);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    char *argv[] = {"cat", NULL};
    pid_t pid;
    int rc = posix_spawnp(&pid, "cat", &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    close(in[0]);
    close(out[1]);
    if (rc != 0) {
        close(in[1]);
        close(out[0]);
        errno = rc;
        return -1;
    }
    ssize_t n = write(in[1], BODY, sizeof BODY - 1);
    close(in[1]);
    char buf[64];
    size_t got = 0;
    while ((n = read(out[0], buf + got, sizeof buf - got)) > 0) got += (size_t)n;
    close(out[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    return got == sizeof BODY - 1 && memcmp(buf, BODY, got) == 0 ? 0 : -2;
}

static void *loop(void *count) {
    while (now() < deadline) {
        int rc = round_trip();
        if (rc == -1) { perror("spawn: cat"); exit(1); }
        if (rc == -2) { fprintf(stderr, "spawn: cat echoed something else\n"); exit(1); }
        ++*(long *)count;
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: spawn THREADS SECONDS\n"); return 2; }
    int threads = atoi(argv[1]);
    if (threads < 1) threads = 1;
    double start = now();
    deadline = start + atof(argv[2]);
    pthread_t ids[threads];
    long counts[threads];
    for (int i = 0; i < threads; i++) {
        counts[i] = 0;
        pthread_create(&ids[i], NULL, loop, &counts[i]);
    }
    long total = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(ids[i], NULL);
        total += counts[i];
    }
    double elapsed = now() - start;
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    double cpu_us = usage.ru_utime.tv_sec * 1e6 + usage.ru_utime.tv_usec + usage.ru_stime.tv_sec * 1e6 + usage.ru_stime.tv_usec;
    printf("spawns=%ld seconds=%.3f cpu_us_per_spawn=%.1f per_s=%.1f\n", total, elapsed, cpu_us / (total ? total : 1), total / elapsed);
    return 0;
}
