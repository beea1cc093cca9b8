/* The floor: the simplest C NFQUEUE consumer, raw netlink, no library. It binds a queue,
 * receives, drops, and does nothing else; what it costs a packet is what any consumer
 * pays the kernel, the mark the daemon is measured against.
 *
 *   floor [--queue Q] [--batch N] [--nap-us U] [--max-len L] [--idle-ms MS]
 *
 * --batch 1 (default): one recv and one verdict per packet (what libnetfilter_queue's
 * examples and the nfq crate do). --batch N: up to N packets per recvmmsg (it waits for
 * the first only), then one NFQNL_MSG_VERDICT_BATCH dropping every packet up to the last
 * id. --nap-us U (with --batch N): once packets flow (a read found some, fewer than N),
 * pause U microseconds and read what gathered without waiting, as the daemon's
 * `[queue] coalesce` does. Stops after --idle-ms without packets (once some came) and
 * prints `key value` lines: packets, cpu_ns (getrusage: user + system), cpu_ns_per_packet.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <linux/netlink.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define SLOT 4096
#define MAX_BATCH 256

static int fd;
static uint32_t seq;

static void die(const char *what) {
  perror(what);
  exit(1);
}

static const char *opt(int argc, char **argv, const char *name, const char *def) {
  for (int i = 1; i + 1 < argc; i++)
    if (!strcmp(argv[i], name)) return argv[i + 1];
  return def;
}

/* One nfnetlink message to the queue subsystem: header, nfgenmsg, attributes. */
struct msg {
  char buf[256];
  size_t len;
};

static void start(struct msg *m, uint16_t type, uint16_t queue) {
  struct nlmsghdr *h = (struct nlmsghdr *)m->buf;
  memset(m->buf, 0, sizeof m->buf);
  h->nlmsg_type = (NFNL_SUBSYS_QUEUE << 8) | type;
  h->nlmsg_flags = NLM_F_REQUEST;
  h->nlmsg_seq = ++seq;
  struct nfgenmsg *g = (struct nfgenmsg *)(m->buf + NLMSG_HDRLEN);
  g->nfgen_family = AF_UNSPEC;
  g->version = NFNETLINK_V0;
  g->res_id = htons(queue);
  m->len = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof *g);
}

static void attr(struct msg *m, uint16_t type, const void *data, size_t len) {
  struct nlattr *a = (struct nlattr *)(m->buf + m->len);
  a->nla_type = type;
  a->nla_len = NLA_HDRLEN + len;
  memcpy((char *)a + NLA_HDRLEN, data, len);
  m->len += NLA_ALIGN(a->nla_len);
}

static void send_msg(struct msg *m) {
  ((struct nlmsghdr *)m->buf)->nlmsg_len = m->len;
  if (send(fd, m->buf, m->len, 0) < 0) die("send");
}

static void verdict(uint16_t queue, uint16_t type, uint32_t id) {
  struct msg m;
  start(&m, type, queue);
  struct nfqnl_msg_verdict_hdr v = {htonl(NF_DROP), htonl(id)};
  attr(&m, NFQA_VERDICT_HDR, &v, sizeof v);
  send_msg(&m);
}

/* The packet id of one received message; 0 when it is not a packet. */
static uint32_t packet_id(const char *buf, ssize_t len) {
  const struct nlmsghdr *h = (const struct nlmsghdr *)buf;
  if (len < (ssize_t)NLMSG_HDRLEN || !NLMSG_OK(h, (size_t)len)) return 0;
  if (h->nlmsg_type != ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET)) return 0;
  size_t off = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct nfgenmsg));
  while (off + NLA_HDRLEN <= h->nlmsg_len) {
    const struct nlattr *a = (const struct nlattr *)(buf + off);
    if (a->nla_len < NLA_HDRLEN || off + a->nla_len > h->nlmsg_len) return 0;
    if ((a->nla_type & NLA_TYPE_MASK) == NFQA_PACKET_HDR &&
        a->nla_len >= NLA_HDRLEN + sizeof(struct nfqnl_msg_packet_hdr)) {
      const struct nfqnl_msg_packet_hdr *p = (const void *)((const char *)a + NLA_HDRLEN);
      return ntohl(p->packet_id);
    }
    off += NLA_ALIGN(a->nla_len);
  }
  return 0;
}

static uint64_t cpu_ns(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ((uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 +
          ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}

int main(int argc, char **argv) {
  uint16_t queue = atoi(opt(argc, argv, "--queue", "0"));
  int batch = atoi(opt(argc, argv, "--batch", "1"));
  uint32_t max_len = strtoul(opt(argc, argv, "--max-len", "16384"), 0, 10);
  long idle_ms = atol(opt(argc, argv, "--idle-ms", "1500"));
  long nap_us = atol(opt(argc, argv, "--nap-us", "0"));
  /* Bytes of each packet the kernel copies to us (the daemon's copy range). */
  uint32_t copy = strtoul(opt(argc, argv, "--copy", "256"), 0, 10);
  if (copy > SLOT - 256) copy = SLOT - 256;
  if (batch < 1 || batch > MAX_BATCH) batch = 1;
  /* As the daemon does: the default timer slack (50 us) would stretch each pause. */
  if (nap_us) prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);

  fd = socket(AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER);
  if (fd < 0) die("socket");
  int rcvbuf = 128 << 20;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0) die("SO_RCVBUFFORCE");
  struct timeval tick = {0, 100000};
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tick, sizeof tick) < 0) die("SO_RCVTIMEO");
  struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");

  struct msg m;
  start(&m, NFQNL_MSG_CONFIG, queue);
  struct nfqnl_msg_config_cmd cmd = {NFQNL_CFG_CMD_BIND, 0, 0};
  attr(&m, NFQA_CFG_CMD, &cmd, sizeof cmd);
  send_msg(&m);
  start(&m, NFQNL_MSG_CONFIG, queue);
  struct nfqnl_msg_config_params params = {htonl(copy), NFQNL_COPY_PACKET};
  attr(&m, NFQA_CFG_PARAMS, &params, sizeof params);
  uint32_t ml = htonl(max_len);
  attr(&m, NFQA_CFG_QUEUE_MAXLEN, &ml, sizeof ml);
  send_msg(&m);
  printf("ready 1\n");
  fflush(stdout);

  static char slots[MAX_BATCH][SLOT];
  struct iovec iov[MAX_BATCH];
  struct mmsghdr hdrs[MAX_BATCH];
  for (int i = 0; i < MAX_BATCH; i++) {
    iov[i].iov_base = slots[i];
    iov[i].iov_len = SLOT;
    memset(&hdrs[i], 0, sizeof hdrs[i]);
    hdrs[i].msg_hdr.msg_iov = &iov[i];
    hdrs[i].msg_hdr.msg_iovlen = 1;
  }

  uint64_t packets = 0, cpu0 = cpu_ns();
  long quiet_ms = 0;
  int flowing = 0;
  for (;;) {
    int n;
    if (flowing && nap_us) {
      /* Packets are flowing: let them gather rather than be woken for each few. */
      struct timespec ts = {0, nap_us * 1000};
      nanosleep(&ts, NULL);
      n = recvmmsg(fd, hdrs, batch, MSG_DONTWAIT, NULL);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        flowing = 0;
        continue;
      }
    } else if (batch == 1) {
      ssize_t len = recv(fd, slots[0], SLOT, 0);
      n = len < 0 ? -1 : 1;
      hdrs[0].msg_len = len < 0 ? 0 : len;
    } else {
      n = recvmmsg(fd, hdrs, batch, MSG_WAITFORONE, NULL);
    }
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (packets && (quiet_ms += 100) >= idle_ms) break;
        continue;
      }
      if (errno == ENOBUFS || errno == EINTR) continue;
      die("recv");
    }
    quiet_ms = 0;
    flowing = n < batch;
    uint32_t last = 0;
    for (int i = 0; i < n; i++) {
      uint32_t id = packet_id(slots[i], hdrs[i].msg_len);
      if (!id) continue;
      packets++;
      if (batch == 1)
        verdict(queue, NFQNL_MSG_VERDICT, id);
      else
        last = id;
    }
    if (last) verdict(queue, NFQNL_MSG_VERDICT_BATCH, last);
  }
  uint64_t cpu = cpu_ns() - cpu0;
  printf("packets %llu\ncpu_ns %llu\ncpu_ns_per_packet %.1f\n", (unsigned long long)packets,
         (unsigned long long)cpu, packets ? (double)cpu / packets : 0.0);
  return 0;
}
