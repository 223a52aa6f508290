/*
 * UDP load generator for bench/firefly_listener.ts: sends one payload over and over to HOST:PORT with
 * sendmmsg() in batches of 32, for SECONDS, unpaced (RATE 0) or paced to RATE datagrams per second.
 * Prints the number of datagrams sent. Loopback use only.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 32

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s HOST PORT SECONDS RATE PAYLOAD_FILE\n", argv[0]);
    return 2;
  }
  const char *host = argv[1];
  int port = atoi(argv[2]);
  double seconds = atof(argv[3]);
  double rate = atof(argv[4]);
  static char payload[65536];
  FILE *f = fopen(argv[5], "rb");
  if (!f) { perror("payload"); return 1; }
  size_t len = fread(payload, 1, sizeof payload, f);
  fclose(f);

  struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
  if (inet_pton(AF_INET, host, &to.sin_addr) != 1) { fprintf(stderr, "bad IPv4 address\n"); return 2; }
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&to, sizeof to) < 0) { perror("socket"); return 1; }

  struct iovec iov = {.iov_base = payload, .iov_len = len};
  struct mmsghdr msgs[BATCH];
  memset(msgs, 0, sizeof msgs);
  for (int i = 0; i < BATCH; i++) { msgs[i].msg_hdr.msg_iov = &iov; msgs[i].msg_hdr.msg_iovlen = 1; }

  unsigned long long sent = 0;
  double start = now_s(), end = start + seconds;
  for (double t = start; t < end; t = now_s()) {
    if (rate > 0) {
      /* Paced: wait until this batch is due. */
      double due = start + (double)sent / rate;
      if (due > t) {
        struct timespec d = {.tv_sec = (time_t)(due - t), .tv_nsec = (long)(((due - t) - (time_t)(due - t)) * 1e9)};
        nanosleep(&d, NULL);
      }
    }
    int n = sendmmsg(fd, msgs, BATCH, 0);
    if (n > 0) sent += n;
  }
  printf("%llu\n", sent);
  close(fd);
  return 0;
}
