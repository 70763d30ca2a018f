/* The long-lived net-snmp anchor of bench/snmp/getv3.py: N sequential SNMPv3 GETs in ONE session.
 *
 *   getloop HOST:PORT N USER AUTH_MASTER_HEX PRIV_MASTER_HEX OID...
 *
 * authPriv SHA/AES with the master keys given (as snmpget -3m/-3M), engine discovery and key
 * localization done once by a warm-up GET, then N GETs one after the other (snmp_synch_response,
 * one request in flight, as our sequential loop). Prints "gets varbinds wall_s cpu_s" of the loop.
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

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: getloop HOST:PORT N USER AUTH_MASTER_HEX PRIV_MASTER_HEX OID...\n");
        return 2;
    }
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
    for (int i = 0; i < n; i++) {
        int got = get(ss, names, lens, n_oids);
        if (got >= 0) {
            ok++;
            varbinds += got;
        }
    }
    wall = now(CLOCK_MONOTONIC) - wall;
    cpu = now(CLOCK_PROCESS_CPUTIME_ID) - cpu;
    printf("%d %ld %.6f %.6f\n", ok, varbinds, wall, cpu);
    snmp_close(ss);
    return 0;
}
