/* The long-lived net-snmp anchor of bench/snmp/getv3.py: N SNMPv3 GETs in ONE session.
 *
 *   getloop HOST:PORT N K USER AUTH_MASTER_HEX PRIV_MASTER_HEX OID...
 *
 * authPriv SHA/AES with the master keys given (as snmpget -3m/-3M), engine discovery and key
 * localization done once by a warm-up GET, then N GETs: one after the other when K is 1
 * (snmp_synch_response), else K in flight at a time (snmp_async_send and net-snmp's select loop).
 * Prints "gets varbinds wall_s cpu_s" of the timed part.
 */
#include <net-snmp/net-snmp-config.h>
#include <net-snmp/net-snmp-includes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static size_t unhex(const char *hex, u_char *out, size_t max) {
    size_t n = 0;
    for (; hex[0] && hex[1] && n < max; hex += 2) {
        unsigned int b;
        if (sscanf(hex, "%2x", &b) != 1) break;
        out[n++] = (u_char)b;
    }
    return n;
}

static double now(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int get(netsnmp_session *ss, oid names[][MAX_OID_LEN], size_t *lens, int n_oids) {
    netsnmp_pdu *pdu = snmp_pdu_create(SNMP_MSG_GET), *resp = NULL;
    for (int i = 0; i < n_oids; i++) snmp_add_null_var(pdu, names[i], lens[i]);
    int varbinds = -1;
    if (snmp_synch_response(ss, pdu, &resp) == STAT_SUCCESS && resp && resp->errstat == SNMP_ERR_NOERROR) {
        varbinds = 0;
        for (netsnmp_variable_list *v = resp->variables; v; v = v->next_variable) varbinds++;
    }
    if (resp) snmp_free_pdu(resp);
    return varbinds;
}

static int in_flight, answered, ok_async;
static long varbinds_async;

static int received(int op, netsnmp_session *sp, int reqid, netsnmp_pdu *resp, void *magic) {
    (void)sp; (void)reqid; (void)magic;
    in_flight--;
    answered++;
    if (op == NETSNMP_CALLBACK_OP_RECEIVED_MESSAGE && resp && resp->errstat == SNMP_ERR_NOERROR) {
        ok_async++;
        for (netsnmp_variable_list *v = resp->variables; v; v = v->next_variable) varbinds_async++;
    }
    return 1;
}

static void run_async(netsnmp_session *ss, oid names[][MAX_OID_LEN], size_t *lens, int n_oids, int n, int k) {
    int sent = 0;
    while (answered < n) {
        while (in_flight < k && sent < n) {
            netsnmp_pdu *pdu = snmp_pdu_create(SNMP_MSG_GET);
            for (int i = 0; i < n_oids; i++) snmp_add_null_var(pdu, names[i], lens[i]);
            if (!snmp_async_send(ss, pdu, received, NULL)) {
                snmp_free_pdu(pdu);
                answered++;  /* counted as failed */
            } else {
                in_flight++;
            }
            sent++;
        }
        int fds = 0, block = 1;
        fd_set fdset;
        struct timeval timeout;
        FD_ZERO(&fdset);
        snmp_select_info(&fds, &fdset, &timeout, &block);
        int count = select(fds, &fdset, NULL, NULL, block ? NULL : &timeout);
        if (count > 0) snmp_read(&fdset);
        else if (count == 0) snmp_timeout();
    }
}

int main(int argc, char **argv) {
    if (argc < 8) {
        fprintf(stderr, "usage: getloop HOST:PORT N K USER AUTH_MASTER_HEX PRIV_MASTER_HEX OID...\n");
        return 2;
    }
    int k = atoi(argv[3]);
    argv[3] = argv[2];  /* drop K: the rest reads HOST:PORT N USER keys OIDs from argv[1] on */
    argv[2] = argv[1];
    argv++;
    argc--;
    setenv("MIBS", "", 1);  /* numeric OIDs only, as snmpget -m '' */
    init_snmp("getloop");
    netsnmp_session s, *ss;
    snmp_sess_init(&s);
    s.peername = argv[1];
    s.version = SNMP_VERSION_3;
    s.securityName = argv[3];
    s.securityNameLen = strlen(argv[3]);
    s.securityLevel = SNMP_SEC_LEVEL_AUTHPRIV;
    s.securityAuthProto = usmHMACSHA1AuthProtocol;
    s.securityAuthProtoLen = USM_AUTH_PROTO_SHA_LEN;
    s.securityPrivProto = usmAESPrivProtocol;
    s.securityPrivProtoLen = USM_PRIV_PROTO_AES_LEN;
    s.securityAuthKeyLen = unhex(argv[4], s.securityAuthKey, sizeof(s.securityAuthKey));
    s.securityPrivKeyLen = unhex(argv[5], s.securityPrivKey, sizeof(s.securityPrivKey));
    s.timeout = 2000000;
    s.retries = 1;
    ss = snmp_open(&s);
    if (!ss) {
        snmp_perror("snmp_open");
        return 1;
    }
    int n_oids = argc - 6;
    oid (*names)[MAX_OID_LEN] = calloc(n_oids, sizeof *names);
    size_t *lens = calloc(n_oids, sizeof *lens);
    for (int i = 0; i < n_oids; i++) {
        lens[i] = MAX_OID_LEN;
        if (!read_objid(argv[6 + i], names[i], &lens[i])) {
            fprintf(stderr, "bad oid %s\n", argv[6 + i]);
            return 2;
        }
    }
    if (get(ss, names, lens, n_oids) < 0) {  /* discovery and key localization, not timed */
        fprintf(stderr, "warm-up GET failed\n");
        return 1;
    }
    int n = atoi(argv[2]), ok = 0;
    long varbinds = 0;
    double wall = now(CLOCK_MONOTONIC), cpu = now(CLOCK_PROCESS_CPUTIME_ID);
    if (k > 1) {
        run_async(ss, names, lens, n_oids, n, k);
        ok = ok_async;
        varbinds = varbinds_async;
    } else {
        for (int i = 0; i < n; i++) {
            int got = get(ss, names, lens, n_oids);
            if (got >= 0) {
                ok++;
                varbinds += got;
            }
        }
    }
    wall = now(CLOCK_MONOTONIC) - wall;
    cpu = now(CLOCK_PROCESS_CPUTIME_ID) - cpu;
    printf("%d %ld %.6f %.6f\n", ok, varbinds, wall, cpu);
    snmp_close(ss);
    return 0;
}
