/* Load client and reference relay for bench/proxy.py (compiled by it into a temp directory).
 *
 *   proxy_load rate PROXY_PORT TARGET_HOST TARGET_PORT CONCURRENCY TOTAL MAX_SECONDS
 *       CONCURRENCY connections at a time through the proxy on 127.0.0.1:PROXY_PORT, each
 *       `CONNECT TARGET_HOST:TARGET_PORT`, then `GET /v2/` inside the tunnel until the registry
 *       closes; PROXY_PORT 0 goes straight to the target (no tunnel). Stops after TOTAL
 *       connections or MAX_SECONDS. Prints one JSON line: rate, errors, setup (connect ->
 *       "200 Connection established") and total (connect -> response read) latencies.
 *
 *   proxy_load serve LISTEN_PORT
 *       A minimal registry ping endpoint: answers every request with `200 {}` as
 *       docker-registry answers GET /v2/, then closes; fast enough not to limit the rate test.
 *
 *   proxy_load relay LISTEN_PORT UPSTREAM_PORT
 *       The least a CONNECT relay can do: read the request head, connect to
 *       127.0.0.1:UPSTREAM_PORT, answer 200, then two threads with blocking splice(2). The
 *       bench uses it as the ceiling of any relay's throughput on this machine.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

enum { CONNECTING, WAIT_200, WAIT_RESPONSE };

struct slot {
    int fd, state, got;
    double start, setup;
    char buf[8192];
};

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, long n, double q) {
    if (n == 0) return 0;
    long i = (long)(q * n);
    return v[i >= n ? n - 1 : i] * 1000;
}

static struct sockaddr_in addr_of(int port) {
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static int rate(int argc, char **argv) {
    if (argc < 8) return 2;
    int proxy_port = atoi(argv[2]), target_port = atoi(argv[4]);
    const char *target = argv[3];
    int conc = atoi(argv[5]);
    long total = atol(argv[6]);
    double max_seconds = atof(argv[7]);
    char connect_req[512], get_req[512];
    snprintf(connect_req, sizeof connect_req, "CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n",
             target, target_port, target, target_port);
    snprintf(get_req, sizeof get_req,
             "GET /v2/ HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n", target, target_port);
    struct sockaddr_in dest = addr_of(proxy_port ? proxy_port : target_port);
    int ep = epoll_create1(0);
    struct slot *slots = calloc(conc, sizeof *slots);
    double *setups = malloc(sizeof(double) * total), *totals = malloc(sizeof(double) * total);
    long started = 0, ok = 0, errors = 0, active = 0;
    double t0 = now();

    for (;;) {
        /* open connections into free slots */
        for (int i = 0; i < conc; i++) {
            if (slots[i].fd > 0 || started >= total || now() - t0 > max_seconds) continue;
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            struct slot *s = &slots[i];
            s->fd = fd;
            s->got = 0;
            s->start = now();
            s->state = CONNECTING;
            started++;
            active++;
            connect(fd, (struct sockaddr *)&dest, sizeof dest);
            struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = i};
            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        }
        if (active == 0) break;
        struct epoll_event evs[256];
        int n = epoll_wait(ep, evs, 256, 1000);
        for (int k = 0; k < n; k++) {
            struct slot *s = &slots[evs[k].data.u32];
            int fail = 0, done = 0;
            if (s->state == CONNECTING) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) {
                    fail = 1;
                } else {
                    const char *req = proxy_port ? connect_req : get_req;
                    if (write(s->fd, req, strlen(req)) < 0) fail = 1;
                    s->state = proxy_port ? WAIT_200 : WAIT_RESPONSE;
                    if (!proxy_port) s->setup = now() - s->start;
                    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[k].data.u32};
                    epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
                }
            } else {
                for (;;) {
                    int room = (int)sizeof s->buf - 1 - s->got;
                    if (room <= 0) { s->got = 64; room = (int)sizeof s->buf - 1 - s->got; }
                    ssize_t r = read(s->fd, s->buf + s->got, room);
                    if (r < 0) {
                        if (errno != EAGAIN) fail = 1;
                        break;
                    }
                    if (r == 0) {
                        if (s->state == WAIT_RESPONSE && strncmp(s->buf, "HTTP/1.1 200", 12) == 0)
                            done = 1;
                        else
                            fail = 1;
                        break;
                    }
                    s->got += r;
                    s->buf[s->got] = 0;
                    if (s->state == WAIT_200 && strstr(s->buf, "\r\n\r\n")) {
                        if (strncmp(s->buf, "HTTP/1.1 200", 12) != 0) { fail = 1; break; }
                        s->setup = now() - s->start;
                        s->state = WAIT_RESPONSE;
                        s->got = 0;
                        if (write(s->fd, get_req, strlen(get_req)) < 0) { fail = 1; break; }
                    }
                }
            }
            if (fail || done) {
                if (done) {
                    setups[ok] = s->setup;
                    totals[ok] = now() - s->start;
                    ok++;
                } else {
                    errors++;
                }
                close(s->fd);
                s->fd = 0;
                active--;
            }
        }
    }
    double elapsed = now() - t0;
    qsort(setups, ok, sizeof(double), cmp);
    qsort(totals, ok, sizeof(double), cmp);
    printf("{\"ok\": %ld, \"errors\": %ld, \"seconds\": %.3f, \"rate\": %.1f, "
           "\"setup_p50_ms\": %.3f, \"setup_p99_ms\": %.3f, "
           "\"total_p50_ms\": %.3f, \"total_p99_ms\": %.3f}\n",
           ok, errors, elapsed, ok / elapsed, pct(setups, ok, 0.5), pct(setups, ok, 0.99),
           pct(totals, ok, 0.5), pct(totals, ok, 0.99));
    return 0;
}

struct pair { int src, dst; };

static void *splice_one(void *arg) {
    struct pair *p = arg;
    int pipefd[2];
    if (pipe(pipefd) == 0) {
        fcntl(pipefd[1], F_SETPIPE_SZ, 1 << 20);
        for (;;) {
            ssize_t n = splice(p->src, NULL, pipefd[1], NULL, 1 << 20, SPLICE_F_MOVE);
            if (n <= 0) break;
            while (n > 0) {
                ssize_t m = splice(pipefd[0], NULL, p->dst, NULL, n, SPLICE_F_MOVE);
                if (m <= 0) goto out;
                n -= m;
            }
        }
    out:
        close(pipefd[0]);
        close(pipefd[1]);
    }
    shutdown(p->dst, SHUT_WR);
    free(p);
    return NULL;
}

static int relay(int argc, char **argv) {
    if (argc < 4) return 2;
    int one = 1, l = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = addr_of(atoi(argv[2])), up = addr_of(atoi(argv[3]));
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1024)) return 1;
    for (;;) {
        int c = accept(l, NULL, NULL);
        if (c < 0) continue;
        char buf[4096];
        int got = 0;
        buf[0] = 0;
        while (!strstr(buf, "\r\n\r\n") && got < (int)sizeof buf - 1) {
            ssize_t r = read(c, buf + got, sizeof buf - 1 - got);
            if (r <= 0) break;
            got += r;
            buf[got] = 0;
        }
        int u = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(u, (struct sockaddr *)&up, sizeof up) ||
            write(c, "HTTP/1.1 200 Connection established\r\n\r\n", 39) != 39) {
            close(u);
            close(c);
            continue;
        }
        struct pair *p1 = malloc(sizeof *p1), *p2 = malloc(sizeof *p2);
        p1->src = c; p1->dst = u;
        p2->src = u; p2->dst = c;
        pthread_t t1, t2;
        pthread_create(&t1, NULL, splice_one, p1);
        pthread_create(&t2, NULL, splice_one, p2);
        pthread_detach(t1);
        pthread_detach(t2);
    }
}


static const char PONG[] =
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json; charset=utf-8\r\n"
    "Docker-Distribution-Api-Version: registry/2.0\r\nConnection: close\r\n\r\n{}";

static int serve(int argc, char **argv) {
    if (argc < 3) return 2;
    int one = 1, l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = addr_of(atoi(argv[2]));
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 4096)) return 1;
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = l};
    epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
    static int seen[65536];
    for (;;) {
        struct epoll_event evs[256];
        int n = epoll_wait(ep, evs, 256, -1);
        for (int k = 0; k < n; k++) {
            int fd = evs[k].data.fd;
            if (fd == l) {
                int c;
                while ((c = accept4(l, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (c >= 65536) { close(c); continue; }
                    seen[c] = 0;
                    struct epoll_event e = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &e);
                }
                continue;
            }
            char buf[4096];
            ssize_t r = read(fd, buf, sizeof buf);
            if (r > 0) {
                /* the request ends with CRLF CRLF; look across reads with a small state */
                for (ssize_t i = 0; i < r; i++) {
                    char want = (seen[fd] % 2 == 0) ? '\r' : '\n';
                    seen[fd] = buf[i] == want ? seen[fd] + 1 : (buf[i] == '\r' ? 1 : 0);
                    if (seen[fd] == 4) break;
                }
                if (seen[fd] < 4) continue;
                if (write(fd, PONG, sizeof PONG - 1) < 0) { /* the client went away */ }
            } else if (r < 0 && errno == EAGAIN) {
                continue;
            }
            close(fd);
        }
    }
}

int main(int argc, char **argv) {
    /* A peer that already left (the harness's readiness probe) must cost a write error, not
       the process: SIGPIPE would end the relay and every later run would find no listener. */
    signal(SIGPIPE, SIG_IGN);
    if (argc > 1 && strcmp(argv[1], "rate") == 0) return rate(argc, argv);
    if (argc > 1 && strcmp(argv[1], "relay") == 0) return relay(argc, argv);
    if (argc > 1 && strcmp(argv[1], "serve") == 0) return serve(argc, argv);
    fprintf(stderr, "usage: proxy_load rate|serve|relay ...\n");
    return 2;
}
