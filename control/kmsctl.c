// SPDX-License-Identifier: Apache-2.0
/*
 * kmsctl: operator tool working directly on the token and the keystore.
 *
 *   kmsctl -c CONF init
 *   kmsctl -c CONF enroll --kind user|as --id ID --out KEYFILE
 *                         [--import KEYFILE | --gba-ks FILE --rand HEX
 *                          --impi IMPI --naf-fqdn FQDN --ua-id HEX]
 *   kmsctl -c CONF enroll-bulk --users N [--as M] [--domain D] [--id-len L]
 *                              --out FILE
 *   kmsctl -c CONF revoke --id ID
 *   kmsctl -c CONF rotate --id ID --out KEYFILE [--overlap-s N]
 *   kmsctl -c CONF show --id ID
 *   kmsctl -c CONF list
 *   kmsctl -c CONF audit
 *   kmsctl -c CONF ibe init|show [--out PARAMS]
 *   kmsctl -c CONF kek-rotate | kek-status
 *   kmsctl gba-derive --gba-ks FILE --rand HEX --impi IMPI --naf-fqdn FQDN
 *                     --ua-id HEX --id ID --out KEYFILE
 *
 * The HSM PIN comes from hsm.pin_file or $KMS_PIN. Enrolment writes the
 * party's copy of its key to KEYFILE (mode 0600): it stands in for GBA or
 * another bootstrap. LMDB allows this tool to write while kmsd runs.
 *
 * enroll-bulk enrolls a load-generator population (N users
 * sip:lg-u%07u@D and M mailbox AS sip:lg-mb%03u@D, numbered from 1; with
 * --id-len every ID is padded with 'x' before the '@' to exactly L bytes)
 * and writes every key to FILE in the format of perf/loadgen/lg_pop.h.
 * Keys are made as `enroll` makes them (HSM RNG, wrapped under the KEK).
 * The whole file is written and fsync'ed before the first commit; the
 * records then go in write transactions of at most BULK_CHUNK parties.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>
#include <lmdb.h>

#include "kms_config.h"
#include "kmsctl_stats.h"
#include "kms_err.h"
#include "kms_gba.h"
#include "kms_hsm.h"
#include "kms_keyfile.h"
#include "kms_kekrot.h"
#include "kms_kgc.h"
#include "kms_ctl.h"
#include "kms_ks.h"
#include "kms_log.h"
#include "kms_secmem.h"
#include "kms_version.h"

struct args {
	const char *config, *kind, *id, *out, *import, *gba_ks, *rand_hex,
		*impi, *naf_fqdn, *ua_hex;
	const char *users, *nas, *domain, *id_len;   /* enroll-bulk */
	enum kmsctl_stats_fmt stats_fmt;
	const char *key_id;                          /* revoke --key-id */
	const char *pair;                            /* policy --pair A,B */
	const char *overlap;                         /* rotate --overlap-s */
	const char *ids;                             /* enroll-bulk --ids */
	struct kms_config cfg;
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: kmsctl [-c CONFIG] COMMAND [options]\n"
		"  -c, --config FILE            kmsd's INI configuration (without it, the\n"
		"                               built-in defaults of kms.conf.example)\n"
		"  -h, --help                   this text\n"
		"      --version                the version and the libraries' versions\n"
		"Commands:\n"
		"  init                         create the KEK in the token and an empty store\n"
		"  enroll --kind user|as --id ID --out KEYFILE\n"
		"         [--import KEYFILE]    use the key of an existing key file\n"
		"         [--gba-ks FILE --rand HEX --impi IMPI --naf-fqdn FQDN --ua-id HEX]\n"
		"                               use Ks_NAF (TS 33.220) as the party key\n"
		"  enroll-bulk --users N [--as M] [--domain D] [--id-len L] --out FILE\n"
		"                               enroll N users (1..1000000) sip:lg-uNNNNNNN@D\n"
		"                               and M mailbox AS (1..999, default 1)\n"
		"                               sip:lg-mbNNN@D (D default lg.example); L pads\n"
		"                               every ID with 'x' before the '@' to L bytes;\n"
		"                               FILE: the load generator's population (0600)\n"
		"  enroll-bulk --ids LIST --out FILE\n"
		"                               enroll the parties of LIST (lines \"user ID\"\n"
		"                               or \"as ID\"), keys to FILE as above\n"
		"  rotate --id ID --out KEYFILE [--overlap-s N] [--import KEYFILE]\n"
		"                               a new key generation for the party; the\n"
		"                               previous one is accepted for N s more\n"
		"                               (default security.rotation_overlap_s)\n"
		"  revoke --id ID               refuse the party from its next request on\n"
		"  revoke --key-id HEX          refuse every later RETRIEVE of one deposit\n"
		"  revoke --pair A,B            refuse the pair's DEPOSITs and the RETRIEVE\n"
		"                               of every deposit it has\n"
		"  show --id ID                 one party\n"
		"  list                         every party\n"
		"  audit                        every audit record, in chain (commit) order:\n"
		"                               seq time_ms event actor a b key_id k_gen\n"
		"  audit verify                 walk the hash chain: exit 1 if a record was\n"
		"                               removed, reordered, altered or cut off\n"
		"  audit export                 the records as JSON lines, with chain hashes\n"
		"  policy show [--json]         the running kmsd's reuse policy\n"
		"  policy set [--domain D | --pair A,B] NAME=VALUE...\n"
		"                               change the default, the override for\n"
		"                               recipients @D, or for the pair A -> B\n"
		"                               (which wins); names: reuse_max_deposits,\n"
		"                               reuse_max_age_s, deposit_lifetime_s,\n"
		"                               max_retrievals. Stored, audited and applied\n"
		"                               without stopping traffic\n"
		"  policy clear --domain D | --pair A,B\n"
		"                               remove an override\n"
		"  kek-rotate                   re-wrap every stored key under a new KEK,\n"
		"                               then destroy the old one: live through\n"
		"                               kmsd (it keeps serving), or offline with\n"
		"                               kmsd stopped; resumes an interrupted one\n"
		"  kek-status                   progress (live) or the token's KEKs\n"
		"  ibe init [--out PARAMS]      create the identity-based master secret (HSM\n"
		"                               RNG, wrapped under the KEK) for MIKEY-IBAKE;\n"
		"                               kmsd loads it at start\n"
		"  ibe show [--out PARAMS]      the public parameters (kgc_id, Z_S, KPAK);\n"
		"                               --out writes the file parties are given\n"
		"  stats [--json | --prometheus]\n"
		"                               the running kmsd's counters (summed, per\n"
		"                               worker, I/O) through its control socket\n"
		"                               (control.socket, default <store.path>/kmsd.sock)\n"
		"  gba-derive --gba-ks FILE --rand HEX --impi IMPI --naf-fqdn FQDN --ua-id HEX\n"
		"         --id ID --out KEYFILE\n"
		"                               the UE side of GBA: write Ks_NAF as a key file\n"
		"The HSM user PIN is read from hsm.pin_file or $KMS_PIN.\n");
}

static int open_all(struct args *a, int create, struct kms_hsm **hsm,
		    struct kms_ks **ks)
{
	struct kms_hsm_config hc = {
		.module = a->cfg.module, .token_label = a->cfg.token_label,
		.kek_label = a->cfg.kek_label,
		.pin_file = a->cfg.pin_file[0] ? a->cfg.pin_file : NULL,
		.pin_env = "KMS_PIN",
	};
	struct kms_ks_config kc = {
		.path = a->cfg.store_path, .map_size = a->cfg.map_size_mb << 20,
		.create = create,
	};
	int rc;

	if (hsm && (rc = kms_hsm_open(&hc, hsm)))
		return rc;
	rc = kms_ks_open(&kc, ks);
	if (rc) {
		fprintf(stderr, "kmsctl: keystore %s: %s%s\n", a->cfg.store_path,
			kms_strerror(rc),
			rc == KMS_ERR_NOTFOUND ? " (run `kmsctl init`)" : "");
		if (hsm)
			kms_hsm_close(*hsm);
	}
	return rc;
}

static void audit_fill(struct kms_audit *au, uint8_t event, const char *actor,
		       const char *id)
{
	memset(au, 0, sizeof(*au));
	au->event = event;
	au->time_ms = now_ms();
	au->actor_len = (uint8_t)strlen(actor);
	memcpy(au->actor, actor, au->actor_len);
	au->id_a_len = (uint8_t)strlen(id);
	memcpy(au->id_a, id, au->id_a_len);
}

static int cmd_init(struct args *a)
{
	struct kms_hsm *hsm = NULL;
	struct kms_ks *ks = NULL;
	struct kms_ks_txn *txn;
	struct kms_audit au;
	char label[KMS_CFG_STR];
	int rc;

	struct kms_hsm_config hc = {
		.module = a->cfg.module, .token_label = a->cfg.token_label,
		.kek_label = a->cfg.kek_label,
		.pin_file = a->cfg.pin_file[0] ? a->cfg.pin_file : NULL,
		.pin_env = "KMS_PIN",
	};
	struct kms_ks_config kc = { .path = a->cfg.store_path,
				    .map_size = a->cfg.map_size_mb << 20 };

	/* Refuse to touch an existing store: a new KEK would orphan it. */
	if (kms_ks_open(&kc, &ks) == KMS_OK) {
		kms_ks_close(ks);
		fprintf(stderr, "kmsctl: a store already exists at %s\n",
			a->cfg.store_path);
		return 1;
	}
	rc = kms_hsm_open(&hc, &hsm);
	if (rc)
		return 1;
	rc = kms_hsm_kek_create(hsm);
	if (rc == KMS_ERR_EXISTS) {
		fprintf(stderr, "kmsctl: token already holds a key labelled '%s': "
			"refusing to create a second one\n", a->cfg.kek_label);
		goto out;
	}
	if (rc)
		goto out;
	rc = open_all(a, 1, NULL, &ks);
	if (rc)
		goto out;
	audit_fill(&au, KMS_AUD_INIT, "kmsctl", a->cfg.kek_label);
	rc = kms_ks_txn_begin(ks, 0, &txn);
	if (!rc) {
		snprintf(label, sizeof(label), "%s", a->cfg.kek_label);
		kms_ks_meta_put(txn, "kek_label", label);
		kms_ks_audit_append(txn, &au);
		rc = kms_ks_txn_commit(txn);
	}
	if (!rc)
		printf("initialised: KEK '%s' in token '%s', store %s\n",
		       a->cfg.kek_label, a->cfg.token_label, a->cfg.store_path);
out:
	if (rc)
		fprintf(stderr, "kmsctl: init failed: %s\n", kms_strerror(rc));
	kms_ks_close(ks);
	kms_hsm_close(hsm);
	return rc ? 1 : 0;
}

static int gba_key(struct args *a, uint8_t out[KMS_KEY_LEN])
{
	uint8_t ks[64], rnd[KMS_GBA_RAND_LEN], ua[KMS_GBA_UA_ID_LEN];
	char line[256], iobuf[512];
	FILE *f;
	int ks_len = -1, rc;

	if (!a->gba_ks || !a->rand_hex || !a->impi || !a->naf_fqdn || !a->ua_hex) {
		fprintf(stderr, "kmsctl: GBA needs --gba-ks --rand --impi --naf-fqdn --ua-id\n");
		return KMS_ERR_INVAL;
	}
	if (kms_hex_decode(a->rand_hex, rnd, sizeof(rnd)) != KMS_GBA_RAND_LEN ||
	    kms_hex_decode(a->ua_hex, ua, sizeof(ua)) != KMS_GBA_UA_ID_LEN) {
		fprintf(stderr, "kmsctl: --rand takes 32 hex digits, --ua-id 10\n");
		return KMS_ERR_INVAL;
	}
	/* Ks (CK || IK) as hex on the first line of a file: never on argv. */
	f = fopen(a->gba_ks, "re");
	if (f)
		setvbuf(f, iobuf, _IOFBF, sizeof(iobuf)); /* wiped below */
	if (f && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\r\n")] = '\0';
		ks_len = kms_hex_decode(line, ks, sizeof(ks));
	}
	if (f)
		fclose(f);
	OPENSSL_cleanse(line, sizeof(line));
	OPENSSL_cleanse(iobuf, sizeof(iobuf));
	if (ks_len <= 0) {
		fprintf(stderr, "kmsctl: %s: expected Ks as hex on the first line\n",
			a->gba_ks);
		return KMS_ERR_INVAL;
	}
	rc = kms_gba_ks_naf(ks, (size_t)ks_len, rnd, a->impi, a->naf_fqdn, ua, out);
	OPENSSL_cleanse(ks, sizeof(ks));
	return rc;
}

static int party_key(struct args *a, struct kms_hsm_session *s,
		     uint8_t key[KMS_KEY_LEN], uint8_t blob[KMS_HSM_BLOB_LEN])
{
	struct kms_keyfile kf;
	int rc;

	if (a->import) {
		rc = kms_keyfile_read(a->import, &kf);
		if (rc) {
			fprintf(stderr, "kmsctl: %s: %s\n", a->import, kms_strerror(rc));
			return rc;
		}
		memcpy(key, kf.key, KMS_KEY_LEN);
		kms_keyfile_wipe(&kf);
	} else if (a->gba_ks) {
		rc = gba_key(a, key);
		if (rc)
			return rc;
	} else {
		return kms_hsm_new_key(s, key, blob);
	}
	return kms_hsm_wrap(s, key, blob);
}

static int cmd_enroll(struct args *a)
{
	struct kms_hsm *hsm = NULL;
	struct kms_hsm_session *s = NULL;
	struct kms_ks *ks = NULL;
	struct kms_ks_txn *txn = NULL;
	struct kms_keyfile kf;
	struct kms_party p, old;
	struct kms_audit au;
	struct kms_id id;
	int rc;

	memset(&kf, 0, sizeof(kf));
	if (!a->kind || !a->id || !a->out ||
	    (strcmp(a->kind, "user") && strcmp(a->kind, "as"))) {
		usage(stderr);
		return 2;
	}
	if (kms_id_from_str(a->id, &id)) {
		fprintf(stderr, "kmsctl: '%s' is not a valid identity (1..%d printable "
			"bytes, no spaces)\n", a->id, KMS_ID_MAX);
		return 2;
	}
	rc = open_all(a, 0, &hsm, &ks);
	if (rc)
		return 1;
	rc = kms_hsm_session_open(hsm, &s);
	if (rc)
		goto out;
	/* Fail early, before any key is made (checked again at the write). */
	rc = kms_ks_txn_begin(ks, 1, &txn);
	if (rc)
		goto out;
	rc = kms_ks_party_get(txn, &id, &old);
	kms_ks_txn_abort(txn);
	txn = NULL;
	if (rc == KMS_OK) {
		fprintf(stderr, "kmsctl: %s is already enrolled\n", a->id);
		rc = KMS_ERR_EXISTS;
		goto out;
	}
	if (rc != KMS_ERR_NOTFOUND)
		goto out;
	memset(&p, 0, sizeof(p));
	p.kind = strcmp(a->kind, "as") ? KMS_PARTY_USER : KMS_PARTY_AS;
	p.status = KMS_PARTY_ACTIVE;
	p.gen = 1;
	p.created_ms = now_ms();
	rc = party_key(a, s, kf.key, p.blob);
	if (rc)
		goto out;
	snprintf(kf.id, sizeof(kf.id), "%s", a->id);
	snprintf(kf.kind, sizeof(kf.kind), "%s", a->kind);
	kf.gen = 1;
	/* The party's copy first: a record without a handed-out key is
	 * harmless, a handed-out key without a record is confusing. */
	rc = kms_keyfile_write(a->out, &kf, 0);
	if (rc) {
		fprintf(stderr, "kmsctl: cannot write %s: %s\n", a->out, kms_strerror(rc));
		goto out;
	}
	audit_fill(&au, KMS_AUD_ENROLL, "kmsctl", a->id);
	rc = kms_ks_txn_begin(ks, 0, &txn);
	if (!rc) {
		/* Checked again under the writer lock: a concurrent enrolment
		 * of the same id must not silently replace the first key. */
		rc = kms_ks_party_get(txn, &id, &old);
		if (rc == KMS_OK) {
			kms_ks_txn_abort(txn);
			fprintf(stderr, "kmsctl: %s was enrolled concurrently\n", a->id);
			unlink(a->out);
			rc = KMS_ERR_EXISTS;
			goto out;
		}
		if (rc == KMS_ERR_NOTFOUND) {
			kms_ks_party_put(txn, &id, &p);
			kms_ks_audit_append(txn, &au);
			rc = kms_ks_txn_commit(txn);
		} else {
			kms_ks_txn_abort(txn);
		}
		if (rc)
			unlink(a->out);
	}
	if (!rc)
		printf("enrolled %s %s (generation 1); key written to %s\n",
		       a->kind, a->id, a->out);
out:
	if (rc)
		fprintf(stderr, "kmsctl: enroll failed: %s\n", kms_strerror(rc));
	kms_keyfile_wipe(&kf);
	kms_hsm_session_close(s);
	kms_ks_close(ks);
	kms_hsm_close(hsm);
	return rc ? 1 : 0;
}

/*
 * enroll-bulk: a population for the load generator (perf/loadgen/lg_pop.h).
 */
#define BULK_USERS_MAX 1000000u
#define BULK_AS_MAX 999u
#define BULK_CHUNK 1000u        /* parties per write transaction */
#define BULK_BUF (64 * 1024)
/* "user " ID " " gen " " hex "\n" */
#define BULK_LINE_MAX (5 + KMS_ID_MAX + 1 + 10 + 1 + 2 * KMS_KEY_LEN + 1)

struct bulk {
	unsigned nusers, nas;
	unsigned id_len;                /* 0: no padding */
	const char *domain;
	size_t total;                   /* nusers + nas */
	char (*list)[KMS_ID_MAX + 1];   /* --ids FILE: users, then AS */
};

/* Key material on its way to the file: one locked slot (kms_secmem). */
struct bulk_secret {
	uint8_t key[KMS_KEY_LEN];
	char buf[BULK_BUF];
};

/* The ID of party @p i (0-based: users first, then the AS) into @p buf.
 * @return its length, or -1 if it does not fit b->id_len or KMS_ID_MAX. */
static int bulk_id(const struct bulk *b, size_t i, char buf[KMS_ID_MAX + 1])
{
	size_t hl, dl = strlen(b->domain), len, pad = 0;
	char head[32];

	if (b->list) {
		memcpy(buf, b->list[i], sizeof(b->list[i]));
		return (int)strlen(buf);
	}
	if (i < b->nusers)
		snprintf(head, sizeof(head), "sip:lg-u%07u", (unsigned)(i + 1));
	else
		snprintf(head, sizeof(head), "sip:lg-mb%03u",
			 (unsigned)(i - b->nusers + 1));
	hl = strlen(head);
	if (dl > KMS_ID_MAX)
		return -1;
	len = hl + 1 + dl;
	if (b->id_len) {
		if (len > b->id_len)
			return -1;
		pad = b->id_len - len;
		len = b->id_len;
	}
	if (len > KMS_ID_MAX)
		return -1;
	memcpy(buf, head, hl);
	memset(buf + hl, 'x', pad);
	buf[hl + pad] = '@';
	memcpy(buf + hl + pad + 1, b->domain, dl);
	buf[len] = '\0';
	return (int)len;
}

static int parse_count(const char *opt, const char *s, unsigned long min,
		       unsigned long max, unsigned *out)
{
	unsigned long v;
	char *end;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (*s < '0' || *s > '9' || errno || *end || v < min || v > max) {
		fprintf(stderr, "kmsctl: --%s takes a number from %lu to %lu\n",
			opt, min, max);
		return -1;
	}
	*out = (unsigned)v;
	return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return KMS_ERR_IO;
		}
		p += w;
		n -= (size_t)w;
	}
	return KMS_OK;
}

/* Make the new file's directory entry durable too. */
static int sync_dir_of(const char *path)
{
	char *copy = strdup(path);
	int fd, rc = KMS_OK;

	if (!copy)
		return KMS_ERR_NOMEM;
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || (fsync(fd) != 0 && errno != EINVAL))
		rc = KMS_ERR_IO;
	if (fd >= 0)
		close(fd);
	free(copy);
	return rc;
}

static void progress(int tty, const char *what, size_t n, size_t total)
{
	if (tty)
		fprintf(stderr, "\rkmsctl: %s %zu/%zu%s", what, n, total,
			n == total ? "\n" : "");
}

/* Make every key and write the population file (already open as @p fd):
 * one line per party, the file fsync'ed. Blobs go to @p parties. */
static int bulk_write(const struct bulk *b, struct kms_hsm_session *s,
		      struct bulk_secret *sec, int fd, struct kms_party *parties,
		      int tty)
{
	static const char head[] =
		"# IMS KMS load-generator population. Secret: keep mode 0600.\n";
	char id[KMS_ID_MAX + 1];
	size_t used = sizeof(head) - 1, i;
	int rc = KMS_OK;

	memcpy(sec->buf, head, used);
	for (i = 0; i < b->total; i++) {
		struct kms_party *p = &parties[i];
		int user = i < b->nusers;

		if (bulk_id(b, i, id) < 0)
			return KMS_ERR_INVAL;    /* checked before: cannot happen */
		rc = kms_hsm_new_key(s, sec->key, p->blob);
		if (rc) {
			if (tty && i)
				fputc('\n', stderr);
			fprintf(stderr, "kmsctl: making the key of %s: %s\n", id,
				kms_strerror(rc));
			break;
		}
		p->kind = user ? KMS_PARTY_USER : KMS_PARTY_AS;
		p->status = KMS_PARTY_ACTIVE;
		p->gen = 1;
		p->created_ms = now_ms();
		used += (size_t)snprintf(sec->buf + used, BULK_BUF - used,
					 "%s %s %u ", user ? "user" : "as", id,
					 p->gen);
		kms_hex_encode(sec->key, KMS_KEY_LEN, sec->buf + used);
		used += 2 * KMS_KEY_LEN;
		sec->buf[used++] = '\n';
		OPENSSL_cleanse(sec->key, sizeof(sec->key));
		if (BULK_BUF - used < BULK_LINE_MAX) {
			rc = write_all(fd, sec->buf, used);
			OPENSSL_cleanse(sec->buf, used);
			used = 0;
			if (rc)
				break;
		}
		if ((i + 1) % BULK_CHUNK == 0 || i + 1 == b->total)
			progress(tty, "keys made", i + 1, b->total);
	}
	if (!rc)
		rc = write_all(fd, sec->buf, used);
	OPENSSL_cleanse(sec->buf, used);
	if (!rc && fsync(fd) != 0)
		rc = KMS_ERR_IO;
	return rc;
}

/* Commit the parties in chunks. @return KMS_OK, or the error of the chunk
 * that failed; *done counts the parties committed before it. */
static int bulk_commit(const struct bulk *b, struct kms_ks *ks,
		       const struct kms_party *parties, size_t *done, int tty)
{
	char id[KMS_ID_MAX + 1];
	struct kms_ks_txn *txn;
	struct kms_party old;
	struct kms_audit au;
	struct kms_id kid;
	size_t i, end;
	int rc = KMS_OK;

	for (*done = 0; *done < b->total; *done = end) {
		end = *done + BULK_CHUNK < b->total ? *done + BULK_CHUNK : b->total;
		txn = NULL;
		rc = kms_ks_txn_begin(ks, 0, &txn);
		for (i = *done; !rc && i < end; i++) {
			if (bulk_id(b, i, id) < 0 || kms_id_from_str(id, &kid)) {
				rc = KMS_ERR_INVAL;
				break;
			}
			/* Checked again under the writer lock, as in enroll. */
			rc = kms_ks_party_get(txn, &kid, &old);
			if (rc == KMS_OK) {
				if (tty && *done)
					fputc('\n', stderr);
				fprintf(stderr, "kmsctl: %s was enrolled concurrently\n",
					id);
				rc = KMS_ERR_EXISTS;
				break;
			}
			if (rc != KMS_ERR_NOTFOUND)
				break;
			audit_fill(&au, KMS_AUD_ENROLL, "kmsctl", id);
			rc = kms_ks_party_put(txn, &kid, &parties[i]);
			if (!rc)
				rc = kms_ks_audit_append(txn, &au);
		}
		if (rc) {
			kms_ks_txn_abort(txn);
			return rc;
		}
		rc = kms_ks_txn_commit(txn);
		if (rc)
			return rc;
		progress(tty, "enrolled", end, b->total);
	}
	return KMS_OK;
}

static int cmp_id(const void *x, const void *y)
{
	return strcmp(*(char *const *)x, *(char *const *)y);
}

/*
 * --ids FILE: one party a line, "user ID" or "as ID"; '#' comments and
 * blank lines skipped. Every ID valid and listed once; users first in
 * b->list, then the AS (the population file's order).
 */
static int bulk_load_ids(const char *path, struct bulk *b)
{
	FILE *f = fopen(path, "re");
	char line[KMS_ID_MAX + 64], kind[8], id[KMS_ID_MAX + 2], **sorted = NULL;
	size_t cap = 0, n = 0, nu = 0, lineno = 0;
	char (*tmp)[KMS_ID_MAX + 1] = NULL;
	uint8_t *is_as = NULL;
	struct kms_id kid;
	int rc = 2;

	if (!f) {
		fprintf(stderr, "kmsctl: %s: %s\n", path, strerror(errno));
		return 2;
	}
	while (fgets(line, sizeof(line), f)) {
		char extra[2];
		int k;

		lineno++;
		if (!strchr(line, '\n') && !feof(f)) {
			fprintf(stderr, "kmsctl: %s:%zu: line too long\n", path, lineno);
			goto out;
		}
		k = sscanf(line, "%7s %129s %1s", kind, id, extra);
		if (k <= 0 || kind[0] == '#')
			continue;
		if (k != 2 || (strcmp(kind, "user") && strcmp(kind, "as")) ||
		    kms_id_from_str(id, &kid)) {
			fprintf(stderr, "kmsctl: %s:%zu: want \"user ID\" or \"as ID\" "
				"(ID: 1..%d printable bytes, no spaces)\n", path,
				lineno, KMS_ID_MAX);
			goto out;
		}
		if (n == cap) {
			size_t nc = cap ? 2 * cap : 1024;
			void *p1 = realloc(tmp, nc * sizeof(*tmp));
			void *p2 = p1 ? realloc(is_as, nc) : NULL;

			if (p1)
				tmp = p1;
			if (!p2) {
				fprintf(stderr, "kmsctl: out of memory\n");
				goto out;
			}
			is_as = p2;
			cap = nc;
		}
		memcpy(tmp[n], id, strlen(id) + 1); /* valid: <= KMS_ID_MAX */
		is_as[n] = !strcmp(kind, "as");
		nu += !is_as[n];
		n++;
		if (n > (size_t)BULK_USERS_MAX + BULK_AS_MAX) {
			fprintf(stderr, "kmsctl: %s: more than %u parties\n", path,
				BULK_USERS_MAX + BULK_AS_MAX);
			goto out;
		}
	}
	if (!n || !nu || n - nu > BULK_AS_MAX) {
		fprintf(stderr, "kmsctl: %s: want at least one user and at most "
			"%u AS\n", path, BULK_AS_MAX);
		goto out;
	}
	b->list = malloc(n * sizeof(*b->list));
	sorted = malloc(n * sizeof(*sorted));
	if (!b->list || !sorted) {
		fprintf(stderr, "kmsctl: out of memory\n");
		goto out;
	}
	for (size_t i = 0, u = 0, s2 = nu; i < n; i++)
		memcpy(b->list[is_as[i] ? s2++ : u++], tmp[i], sizeof(tmp[i]));
	for (size_t i = 0; i < n; i++)
		sorted[i] = b->list[i];
	qsort(sorted, n, sizeof(*sorted), cmp_id);
	for (size_t i = 1; i < n; i++)
		if (!strcmp(sorted[i - 1], sorted[i])) {
			fprintf(stderr, "kmsctl: %s: %s is listed twice\n", path,
				sorted[i]);
			goto out;
		}
	b->nusers = (unsigned)nu;
	b->nas = (unsigned)(n - nu);
	b->total = n;
	rc = 0;
out:
	if (rc) {
		free(b->list);
		b->list = NULL;
	}
	free(sorted);
	free(tmp);
	free(is_as);
	fclose(f);
	return rc;
}

static int cmd_enroll_bulk(struct args *a)
{
	struct bulk b = { .nas = 1, .domain = "lg.example" }, raw;
	struct kms_hsm *hsm = NULL;
	struct kms_hsm_session *s = NULL;
	struct kms_ks *ks = NULL;
	struct kms_ks_txn *txn = NULL;
	struct kms_secmem *sm = NULL;
	struct bulk_secret *sec = NULL;
	struct kms_party *parties = NULL, old;
	struct kms_id kid;
	char id[KMS_ID_MAX + 1], first[KMS_ID_MAX + 1] = "";
	size_t i, taken = 0, done = 0, probe[2];
	int tty = isatty(STDERR_FILENO), fd = -1, created = 0, len, rc, err;

	if ((!a->users == !a->ids) || !a->out || a->kind || a->id ||
	    a->import || a->gba_ks ||
	    (a->ids && (a->nas || a->domain || a->id_len))) {
		usage(stderr);
		return 2;
	}
	if (a->ids) {
		if (bulk_load_ids(a->ids, &b))
			return 2;
		goto ids_ok;
	}
	if (parse_count("users", a->users, 1, BULK_USERS_MAX, &b.nusers) ||
	    (a->nas && parse_count("as", a->nas, 1, BULK_AS_MAX, &b.nas)) ||
	    (a->id_len && parse_count("id-len", a->id_len, 1, KMS_ID_MAX,
				      &b.id_len)))
		return 2;
	if (a->domain)
		b.domain = a->domain;
	b.total = (size_t)b.nusers + b.nas;
	/* All users' IDs have one length, all AS' another: check one each. */
	raw = b;
	raw.id_len = 0;
	probe[0] = b.nusers - 1;
	probe[1] = b.total - 1;
	for (i = 0; i < 2; i++) {
		len = bulk_id(&raw, probe[i], id);
		if (len < 0 || kms_id_from_str(id, &kid)) {
			fprintf(stderr, "kmsctl: --domain '%s' does not make valid "
				"identities (1..%d printable bytes, no spaces)\n",
				b.domain, KMS_ID_MAX);
			return 2;
		}
		if (b.id_len && (unsigned)len > b.id_len) {
			fprintf(stderr, "kmsctl: --id-len %u is shorter than %s "
				"(%d bytes)\n", b.id_len, id, len);
			return 2;
		}
	}

ids_ok:
	parties = calloc(b.total, sizeof(*parties));
	if (!parties) {
		fprintf(stderr, "kmsctl: out of memory for %zu parties\n", b.total);
		free(b.list);
		return 1;
	}
	rc = open_all(a, 0, &hsm, &ks);
	if (rc) {
		free(parties);
		free(b.list);
		return 1;
	}
	rc = kms_hsm_session_open(hsm, &s);
	if (rc)
		goto out;
	/* Every ID must be new: checked before any key is made. */
	rc = kms_ks_txn_begin(ks, 1, &txn);
	if (rc)
		goto out;
	for (i = 0; !rc && i < b.total; i++) {
		if (bulk_id(&b, i, id) < 0 || kms_id_from_str(id, &kid)) {
			rc = KMS_ERR_INVAL;
			break;
		}
		rc = kms_ks_party_get(txn, &kid, &old);
		if (rc == KMS_OK && !taken++)
			snprintf(first, sizeof(first), "%s", id);
		if (rc == KMS_OK || rc == KMS_ERR_NOTFOUND)
			rc = KMS_OK;
	}
	kms_ks_txn_abort(txn);
	txn = NULL;
	if (rc)
		goto out;
	if (taken) {
		fprintf(stderr, "kmsctl: %s is already enrolled (%zu of the %zu "
			"identities are); %s not written\n", first, taken,
			b.total, a->out);
		rc = KMS_ERR_EXISTS;
		goto out;
	}

	fd = open(a->out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		err = errno;
		fprintf(stderr, "kmsctl: %s: %s%s\n", a->out, strerror(err),
			err == EEXIST ? ": refusing to overwrite it" : "");
		rc = err == EEXIST ? KMS_ERR_EXISTS : KMS_ERR_IO;
		goto out;
	}
	created = 1;
	/* O_CREAT's mode went through the umask: make it exactly 0600. */
	if (fchmod(fd, 0600) != 0) {
		rc = KMS_ERR_IO;
		goto out;
	}
	rc = kms_secmem_create(sizeof(*sec), 1, &sm);
	if (rc)
		goto out;
	sec = kms_secmem_alloc(sm);
	if (!sec) {
		rc = KMS_ERR_NOMEM;
		goto out;
	}
	/* The whole file, durable, before the first record: a record without
	 * a handed-out key is harmless, a handed-out key without a record is
	 * confusing (as in enroll). */
	rc = bulk_write(&b, s, sec, fd, parties, tty);
	kms_secmem_destroy(sm);
	sm = NULL;
	if (!rc) {
		rc = close(fd) == 0 ? KMS_OK : KMS_ERR_IO;
		fd = -1;
	}
	if (!rc)
		rc = sync_dir_of(a->out);
	if (rc) {
		fprintf(stderr, "kmsctl: cannot write %s: %s\n", a->out,
			kms_strerror(rc));
		goto out;
	}

	rc = bulk_commit(&b, ks, parties, &done, tty);
	if (rc && done) {
		fprintf(stderr, "kmsctl: enroll-bulk failed: %s; enrolled %zu "
			"of the %zu parties, the first %zu of %s (kept: their "
			"keys exist only there)\n", kms_strerror(rc), done,
			b.total, done, a->out);
		goto out;
	}
	if (!rc)
		printf("enrolled %u users and %u AS; population written to %s\n",
		       b.nusers, b.nas, a->out);
out:
	if (fd >= 0)
		close(fd);
	if (rc && !done) {
		if (created)
			unlink(a->out);
		fprintf(stderr, "kmsctl: enroll-bulk failed: %s; nothing enrolled%s\n",
			kms_strerror(rc), created ? ", population file removed" : "");
	}
	kms_secmem_destroy(sm);
	free(parties);
	free(b.list);
	kms_hsm_session_close(s);
	kms_ks_close(ks);
	kms_hsm_close(hsm);
	return rc ? 1 : 0;
}

/* One deposit: its status becomes REVOKED, audited in the same txn. kmsd
 * reads the record on every RETRIEVE, so the next one is refused. */
static int revoke_deposit(struct args *a)
{
	uint8_t kid[KMS_KEY_ID_LEN];
	struct kms_ks *ks = NULL;
	struct kms_ks_txn *txn;
	struct kms_deposit d;
	struct kms_audit au;
	int rc;

	if (kms_hex_decode(a->key_id, kid, sizeof(kid)) != KMS_KEY_ID_LEN ||
	    strlen(a->key_id) != 2 * KMS_KEY_ID_LEN) {
		fprintf(stderr, "kmsctl: --key-id takes %d hex digits\n",
			2 * KMS_KEY_ID_LEN);
		return 2;
	}
	if (open_all(a, 0, NULL, &ks))
		return 1;
	rc = kms_ks_txn_begin(ks, 0, &txn);
	if (!rc) {
		rc = kms_ks_deposit_get(txn, kid, &d);
		if (rc == KMS_OK && d.status == KMS_DEP_REVOKED)
			rc = KMS_ERR_EXISTS;
		if (rc == KMS_OK) {
			d.status = KMS_DEP_REVOKED;
			memset(&au, 0, sizeof(au));
			au.event = KMS_AUD_REVOKE;
			au.time_ms = now_ms();
			au.k_gen = d.k_gen;
			memcpy(au.key_id, kid, sizeof(kid));
			au.actor_len = 6;
			memcpy(au.actor, "kmsctl", 6);
			au.id_a_len = d.id_a_len;
			memcpy(au.id_a, d.id_a, d.id_a_len);
			au.id_b_len = d.id_b_len;
			memcpy(au.id_b, d.id_b, d.id_b_len);
			kms_ks_deposit_put(txn, kid, &d, 1);
			kms_ks_audit_append(txn, &au);
			rc = kms_ks_txn_commit(txn);
		} else {
			kms_ks_txn_abort(txn);
		}
	}
	if (rc)
		fprintf(stderr, "kmsctl: revoke --key-id %s: %s\n", a->key_id,
			rc == KMS_ERR_EXISTS ? "already revoked" : kms_strerror(rc));
	else
		printf("revoked deposit %s\n", a->key_id);
	kms_ks_close(ks);
	return rc ? 1 : 0;
}

/* revoke --pair A,B: no more DEPOSIT for the pair, no RETRIEVE of any of
 * its deposits (the engine checks the pair record). */
static int revoke_pair(struct args *a)
{
	char buf[2 * KMS_ID_MAX + 2], *comma;
	uint8_t hash[KMS_PAIR_HASH_LEN];
	struct kms_ks *ks = NULL;
	struct kms_ks_txn *txn;
	struct kms_pair pr;
	struct kms_audit au;
	struct kms_id ia, ib;
	int rc;

	if (strlen(a->pair) >= sizeof(buf) || !(comma = strchr(a->pair, ','))) {
		fprintf(stderr, "kmsctl: --pair A,B: two identities, comma-separated\n");
		return 2;
	}
	strcpy(buf, a->pair);
	buf[comma - a->pair] = '\0';
	if (kms_id_from_str(buf, &ia) ||
	    kms_id_from_str(buf + (comma - a->pair) + 1, &ib)) {
		fprintf(stderr, "kmsctl: --pair A,B: not two valid identities\n");
		return 2;
	}
	kms_pair_hash(&ia, &ib, hash);
	if (open_all(a, 0, NULL, &ks))
		return 1;
	rc = kms_ks_txn_begin(ks, 0, &txn);
	if (!rc) {
		rc = kms_ks_pair_get(txn, hash, &pr);
		if (rc == KMS_OK && pr.revoked)
			rc = KMS_ERR_EXISTS;
		if (rc == KMS_OK) {
			pr.revoked = 1;
			audit_fill(&au, KMS_AUD_REVOKE, "kmsctl", buf);
			au.id_b_len = ib.len;
			memcpy(au.id_b, ib.p, ib.len);
			au.k_gen = pr.k_gen;
			kms_ks_pair_put(txn, hash, &pr);
			kms_ks_audit_append(txn, &au);
			rc = kms_ks_txn_commit(txn);
		} else {
			kms_ks_txn_abort(txn);
		}
	}
	if (rc)
		fprintf(stderr, "kmsctl: revoke --pair %s: %s\n", a->pair,
			rc == KMS_ERR_EXISTS ? "already revoked" :
			rc == KMS_ERR_NOTFOUND ? "no deposit was ever made for "
						 "this pair" : kms_strerror(rc));
	else
		printf("revoked pair %s\n", a->pair);
	kms_ks_close(ks);
	return rc ? 1 : 0;
}

static int cmd_revoke(struct args *a)
{
	struct kms_ks *ks = NULL;
	struct kms_ks_txn *txn;
	struct kms_party p;
	struct kms_audit au;
	struct kms_id id;
	int rc;

	if (a->pair && !a->id && !a->key_id)
		return revoke_pair(a);
	if (a->key_id && !a->id && !a->pair)
		return revoke_deposit(a);
	if (!a->id || a->key_id || kms_id_from_str(a->id, &id)) {
		usage(stderr);
		return 2;
	}
	if (open_all(a, 0, NULL, &ks))
		return 1;
	rc = kms_ks_txn_begin(ks, 0, &txn);
	if (!rc) {
		rc = kms_ks_party_get(txn, &id, &p);
		if (rc == KMS_OK) {
			p.status = KMS_PARTY_REVOKED;
			audit_fill(&au, KMS_AUD_REVOKE, "kmsctl", a->id);
			kms_ks_party_put(txn, &id, &p);
			kms_ks_audit_append(txn, &au);
			rc = kms_ks_txn_commit(txn);
		} else {
			kms_ks_txn_abort(txn);
		}
	}
	if (rc)
		fprintf(stderr, "kmsctl: revoke %s: %s\n", a->id, kms_strerror(rc));
	else
		printf("revoked %s\n", a->id);
	kms_ks_close(ks);
	return rc ? 1 : 0;
}

/*
 * rotate: a new key generation for a party. The new key (HSM RNG, or
 * --import) goes to the party's key file first, then the record keeps the
 * previous generation valid for security.rotation_overlap_s (--overlap-s),
 * in one durable commit with its audit record.
 */
static int cmd_rotate(struct args *a)
{
	struct kms_hsm *hsm = NULL;
	struct kms_hsm_session *s = NULL;
	struct kms_ks *ks = NULL;
	struct kms_ks_txn *txn = NULL;
	struct kms_keyfile kf;
	struct kms_party p, cur;
	struct kms_audit au;
	struct kms_id id;
	uint64_t overlap_ms = (uint64_t)a->cfg.rotation_overlap_s * 1000;
	uint8_t blob[KMS_HSM_BLOB_LEN];
	int rc;

	memset(&kf, 0, sizeof(kf));
	if (!a->id || !a->out || kms_id_from_str(a->id, &id)) {
		usage(stderr);
		return 2;
	}
	if (a->overlap) {
		char *end;
		unsigned long v = strtoul(a->overlap, &end, 10);

		if (*end || end == a->overlap || v > 90ul * 86400) {
			fprintf(stderr, "kmsctl: --overlap-s: 0..%lu seconds\n",
				90ul * 86400);
			return 2;
		}
		overlap_ms = (uint64_t)v * 1000;
	}
	if (open_all(a, 0, &hsm, &ks))
		return 1;
	rc = kms_hsm_session_open(hsm, &s);
	if (rc)
		goto out;
	rc = kms_ks_txn_begin(ks, 1, &txn);
	if (rc)
		goto out;
	rc = kms_ks_party_get(txn, &id, &p);
	kms_ks_txn_abort(txn);
	txn = NULL;
	if (rc == KMS_OK && p.status != KMS_PARTY_ACTIVE) {
		fprintf(stderr, "kmsctl: %s is revoked: enroll it again instead\n",
			a->id);
		rc = KMS_ERR_INVAL;
	}
	if (rc)
		goto out;
	rc = party_key(a, s, kf.key, blob);
	if (rc)
		goto out;
	snprintf(kf.id, sizeof(kf.id), "%s", a->id);
	snprintf(kf.kind, sizeof(kf.kind), "%s",
		 p.kind == KMS_PARTY_AS ? "as" : "user");
	kf.gen = p.gen + 1;
	rc = kms_keyfile_write(a->out, &kf, 0);
	if (rc) {
		fprintf(stderr, "kmsctl: cannot write %s: %s\n", a->out,
			kms_strerror(rc));
		goto out;
	}
	rc = kms_ks_txn_begin(ks, 0, &txn);
	if (rc)
		goto out_unlink;
	/* Under the writer lock: the generation we read must still be the
	 * current one (no concurrent rotation, revocation or re-enrolment). */
	rc = kms_ks_party_get(txn, &id, &cur);
	if (rc || cur.gen != p.gen || cur.status != KMS_PARTY_ACTIVE) {
		kms_ks_txn_abort(txn);
		fprintf(stderr, "kmsctl: %s changed concurrently: not rotated\n",
			a->id);
		rc = rc ? rc : KMS_ERR_EXISTS;
		goto out_unlink;
	}
	p.prev_gen = p.gen;
	p.prev_until_ms = now_ms() + overlap_ms;
	memcpy(p.prev_blob, p.blob, sizeof(p.blob));
	p.gen++;
	memcpy(p.blob, blob, sizeof(blob));
	audit_fill(&au, KMS_AUD_ROTATE, "kmsctl", a->id);
	au.k_gen = p.gen;
	kms_ks_party_put(txn, &id, &p);
	kms_ks_audit_append(txn, &au);
	rc = kms_ks_txn_commit(txn);
out_unlink:
	if (rc)
		unlink(a->out);
	else
		printf("rotated %s to generation %u; key written to %s; "
		       "generation %u accepted until %llu (%llu s)\n", a->id,
		       p.gen, a->out, p.prev_gen,
		       (unsigned long long)p.prev_until_ms,
		       (unsigned long long)(overlap_ms / 1000));
out:
	if (rc)
		fprintf(stderr, "kmsctl: rotate failed: %s\n", kms_strerror(rc));
	kms_keyfile_wipe(&kf);
	kms_hsm_session_close(s);
	kms_ks_close(ks);
	kms_hsm_close(hsm);
	return rc ? 1 : 0;
}

static int print_party(const struct kms_id *id, const struct kms_party *p,
		       void *arg)
{
	(void)arg;
	printf("%.*s kind=%s status=%s gen=%u created_ms=%llu", id->len,
	       (const char *)id->p, p->kind == KMS_PARTY_AS ? "as" : "user",
	       p->status == KMS_PARTY_ACTIVE ? "active" : "revoked", p->gen,
	       (unsigned long long)p->created_ms);
	if (p->prev_gen)
		printf(" prev_gen=%u prev_until_ms=%llu", p->prev_gen,
		       (unsigned long long)p->prev_until_ms);
	printf("\n");
	return 0;
}

static void print_ibe_params(const struct kms_ibe_params *p)
{
	char zs[2 * KMS_SAKKE_POINT_LEN + 1], kpak[2 * KMS_ECCSI_POINT_LEN + 1];
	char id[2 * KMS_IBE_KGC_ID_LEN + 1];

	kms_hex_encode(p->kgc_id, sizeof(p->kgc_id), id);
	kms_hex_encode(p->zs, sizeof(p->zs), zs);
	kms_hex_encode(p->kpak, sizeof(p->kpak), kpak);
	printf("kgc_id = %s\nzs = %s\nkpak = %s\n", id, zs, kpak);
}

/* ibe init: the master secret; ibe show: the public parameters. */
static int cmd_ibe(struct args *a, const char *verb)
{
	struct kms_ibe_params params;
	struct kms_hsm_session *s = NULL;
	struct kms_hsm *hsm = NULL;
	struct kms_ks *ks = NULL;
	int init = !strcmp(verb, "init"), rc;

	if (!init && strcmp(verb, "show")) {
		fprintf(stderr, "kmsctl: ibe init|show [--out PARAMS]\n");
		return 2;
	}
	if (open_all(a, 0, init ? &hsm : NULL, &ks))
		return 1;
	if (init) {
		rc = kms_hsm_session_open(hsm, &s);
		if (!rc)
			rc = kms_kgc_init(ks, s, "kmsctl", &params);
		kms_hsm_session_close(s);
		if (rc == KMS_ERR_EXISTS)
			fprintf(stderr, "kmsctl: ibe init: the store already has "
				"an IBE master secret (kmsctl ibe show)\n");
	} else {
		rc = kms_kgc_public(ks, &params);
		if (rc == KMS_ERR_NOTFOUND)
			fprintf(stderr, "kmsctl: ibe show: no IBE master secret "
				"(run kmsctl ibe init)\n");
	}
	if (rc) {
		if (rc != KMS_ERR_EXISTS && rc != KMS_ERR_NOTFOUND)
			fprintf(stderr, "kmsctl: ibe %s: %s\n", verb,
				kms_strerror(rc));
		goto out;
	}
	print_ibe_params(&params);
	if (a->out) {
		rc = kms_ibe_params_write(a->out, &params);
		if (rc)
			fprintf(stderr, "kmsctl: %s: %s\n", a->out,
				kms_strerror(rc));
	}
out:
	kms_ks_close(ks);
	kms_hsm_close(hsm);
	return rc ? 1 : 0;
}

/* Is a kmsd serving @p path? 1 yes, 0 no (no socket, or a stale one), -1
 * cannot tell (then nothing may assume kmsd is stopped). */
static int kmsd_serving(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, rc, e;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -1;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	e = errno;
	close(fd);
	if (!rc)
		return 1;
	return e == ENOENT || e == ECONNREFUSED ? 0 : -1;
}

static void print_kekrot(json_t *k)
{
	printf("kek rotation: %s%s, %lld record(s) visited, %lld blob(s) "
	       "re-wrapped, %lld pass(es)%s%s\n",
	       json_is_true(json_object_get(k, "running")) ? "running" : "",
	       json_is_true(json_object_get(k, "done")) ? "done" :
	       json_is_true(json_object_get(k, "running")) ? "" : "not done",
	       (long long)json_integer_value(json_object_get(k, "visited")),
	       (long long)json_integer_value(json_object_get(k, "rewrapped")),
	       (long long)json_integer_value(json_object_get(k, "passes")),
	       *json_string_value(json_object_get(k, "error")) ? ", error: " : "",
	       json_string_value(json_object_get(k, "error")));
}

/* One control request; the reply's "kek_rotation" object, or NULL. */
static json_t *kek_call(const char *path, const char *line)
{
	json_t *r = kmsctl_call(path, line), *k;

	if (!r)
		return NULL;
	k = json_incref(json_object_get(r, "kek_rotation"));
	json_decref(r);
	return k;
}

/*
 * kek-rotate: through the running kmsd (live, while it serves), polling
 * its progress until done; with kmsd stopped, here. kek-status: progress
 * (live) or the token's KEKs (offline).
 */
static int cmd_kek(struct args *a, int rotate)
{
	struct kms_kekrot_progress pg;
	struct kms_kekrot_conf conf = { .batch = 64, .actor = "kmsctl",
					.progress = &pg };
	struct kms_hsm *hsm = NULL;
	struct kms_ks *ks = NULL;
	unsigned cur = 0, next = 0;
	char path[128];
	json_t *k;
	int live, rc;

	if (kms_config_ctl_path(&a->cfg, path, sizeof(path))) {
		fprintf(stderr, "kmsctl: control socket path too long\n");
		return 2;
	}
	live = kmsd_serving(path);
	if (live < 0) {
		fprintf(stderr, "kmsctl: cannot tell whether kmsd serves %s "
			"(permissions?): nothing done\n", path);
		return 1;
	}
	if (live) {
		k = kek_call(path, rotate ? "kek-rotate" : "kek-status");
		while (k && rotate && json_is_true(json_object_get(k, "running"))) {
			json_decref(k);
			usleep(200 * 1000);
			k = kek_call(path, "kek-status");
		}
		if (!k)
			return 1;
		print_kekrot(k);
		rc = rotate && !json_is_true(json_object_get(k, "done"));
		json_decref(k);
		return rc;
	}
	if (open_all(a, 0, &hsm, &ks))
		return 1;
	if (rotate) {
		rc = kms_kek_rotate(ks, hsm, &conf);
		printf("kek rotation (offline): %s, %llu record(s) visited, %llu "
		       "blob(s) re-wrapped, %u pass(es)\n",
		       rc ? kms_strerror(rc) : "done",
		       (unsigned long long)pg.visited,
		       (unsigned long long)pg.rewrapped, pg.passes);
	} else {
		rc = kms_hsm_kek_state(hsm, &cur, &next);
		if (!rc)
			printf("kmsd is not running; the token holds %u KEK(s) "
			       "labelled '%s' and %u being rotated in%s\n", cur,
			       a->cfg.kek_label, next,
			       next ? " (run kmsctl kek-rotate to finish)" : "");
	}
	kms_ks_close(ks);
	kms_hsm_close(hsm);
	return rc ? 1 : 0;
}

static const char *audit_event_name(uint8_t e)
{
	static const char *const ev[] = { "?", "enroll", "revoke", "key-new",
					  "key-reuse", "key-retrieve", "init",
					  "policy", "ibe-init", "ibe-issue",
					  "rotate", "kek-rotate" };

	return e < sizeof(ev) / sizeof(ev[0]) ? ev[e] : "?";
}

static int print_audit(const struct kms_audit *au, void *arg)
{
	char kid[2 * KMS_KEY_ID_LEN + 1];

	(void)arg;
	kms_hex_encode(au->key_id, KMS_KEY_ID_LEN, kid);
	printf("%llu %llu %s actor=%.*s a=%.*s b=%.*s key_id=%s k_gen=%u\n",
	       (unsigned long long)au->seq, (unsigned long long)au->time_ms,
	       audit_event_name(au->event), au->actor_len, au->actor,
	       au->id_a_len, au->id_a, au->id_b_len, au->id_b, kid, au->k_gen);
	return 0;
}

/* `audit export`: one JSON object a line, with the record's chain hash. */
static int export_audit(const struct kms_audit *au, void *arg)
{
	char kid[2 * KMS_KEY_ID_LEN + 1], hash[2 * KMS_AUDIT_HASH_LEN + 1];
	json_t *o;
	char *line;

	(void)arg;
	kms_hex_encode(au->key_id, KMS_KEY_ID_LEN, kid);
	kms_hex_encode(au->hash, KMS_AUDIT_HASH_LEN, hash);
	o = json_pack("{s:I, s:I, s:s, s:s%, s:s%, s:s%, s:s, s:I, s:s}",
		      "seq", (json_int_t)au->seq, "time_ms", (json_int_t)au->time_ms,
		      "event", audit_event_name(au->event),
		      "actor", au->actor, (size_t)au->actor_len,
		      "id_a", au->id_a, (size_t)au->id_a_len,
		      "id_b", au->id_b, (size_t)au->id_b_len, "key_id", kid,
		      "k_gen", (json_int_t)au->k_gen, "chain_hash", hash);
	line = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!line)
		return KMS_ERR_NOMEM;
	puts(line);
	free(line);
	return 0;
}

static int audit_verify(struct kms_ks_txn *txn)
{
	struct kms_audit_check c;
	int rc = kms_ks_audit_verify(txn, &c);

	if (rc == KMS_OK)
		printf("audit chain intact: %llu records\n",
		       (unsigned long long)c.records);
	else if (rc == KMS_ERR_CORRUPT)
		printf("audit chain BROKEN at record %llu (of %llu walked): %s\n",
		       (unsigned long long)c.bad_seq,
		       (unsigned long long)c.records, c.reason);
	return rc;
}

static int cmd_read(struct args *a, const char *what, const char *sub)
{
	struct kms_ks *ks = NULL;
	struct kms_ks_txn *txn;
	struct kms_party p;
	struct kms_id id;
	int rc;

	if ((!strcmp(what, "show") && (!a->id || kms_id_from_str(a->id, &id))) ||
	    (sub && (strcmp(what, "audit") ||
		     (strcmp(sub, "verify") && strcmp(sub, "export"))))) {
		usage(stderr);
		return 2;
	}
	if (open_all(a, 0, NULL, &ks))
		return 1;
	rc = kms_ks_txn_begin(ks, 1, &txn);
	if (!rc) {
		if (!strcmp(what, "show")) {
			rc = kms_ks_party_get(txn, &id, &p);
			if (!rc)
				print_party(&id, &p, NULL);
		} else if (!strcmp(what, "list")) {
			rc = kms_ks_party_foreach(txn, print_party, NULL);
		} else if (sub && !strcmp(sub, "verify")) {
			rc = audit_verify(txn);
			if (rc == KMS_ERR_CORRUPT) {
				kms_ks_txn_abort(txn);
				kms_ks_close(ks);
				return 1;
			}
		} else if (sub && !strcmp(sub, "export")) {
			rc = kms_ks_audit_foreach(txn, export_audit, NULL);
		} else {
			rc = kms_ks_audit_foreach(txn, print_audit, NULL);
		}
		kms_ks_txn_abort(txn);
	}
	if (rc)
		fprintf(stderr, "kmsctl: %s: %s\n", what, kms_strerror(rc));
	kms_ks_close(ks);
	return rc ? 1 : 0;
}

static int cmd_gba_derive(struct args *a)
{
	struct kms_keyfile kf;
	struct kms_id id;
	int rc;

	memset(&kf, 0, sizeof(kf));
	if (!a->id || !a->out || kms_id_from_str(a->id, &id)) {
		usage(stderr);
		return 2;
	}
	rc = gba_key(a, kf.key);
	if (!rc) {
		snprintf(kf.id, sizeof(kf.id), "%s", a->id);
		snprintf(kf.kind, sizeof(kf.kind), "user");
		kf.gen = 1;
		rc = kms_keyfile_write(a->out, &kf, 0);
	}
	kms_keyfile_wipe(&kf);
	if (rc)
		fprintf(stderr, "kmsctl: gba-derive: %s\n", kms_strerror(rc));
	else
		printf("Ks_NAF for %s written to %s\n", a->id, a->out);
	return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "kind", required_argument, NULL, 'k' },
		{ "id", required_argument, NULL, 'i' },
		{ "out", required_argument, NULL, 'o' },
		{ "import", required_argument, NULL, 'I' },
		{ "gba-ks", required_argument, NULL, 'g' },
		{ "rand", required_argument, NULL, 'r' },
		{ "impi", required_argument, NULL, 'm' },
		{ "naf-fqdn", required_argument, NULL, 'n' },
		{ "ua-id", required_argument, NULL, 'u' },
		{ "users", required_argument, NULL, 'U' },
		{ "as", required_argument, NULL, 'A' },
		{ "domain", required_argument, NULL, 'D' },
		{ "id-len", required_argument, NULL, 'L' },
		{ "json", no_argument, NULL, 'J' },
		{ "key-id", required_argument, NULL, 'K' },
		{ "pair", required_argument, NULL, 'p' },
		{ "overlap-s", required_argument, NULL, 'O' },
		{ "ids", required_argument, NULL, 'F' },
		{ "prometheus", no_argument, NULL, 'P' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, KMS_OPT_VERSION },
		{ NULL, 0, NULL, 0 },
	};
	struct args a;
	const char *cmd;
	char err[512];
	int c;

	memset(&a, 0, sizeof(a));
	kms_log_init("kmsctl", KMS_LOG_INFO, 0);
	kms_secmem_harden_process();
	while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
		switch (c) {
		case 'c': a.config = optarg; break;
		case 'k': a.kind = optarg; break;
		case 'i': a.id = optarg; break;
		case 'o': a.out = optarg; break;
		case 'I': a.import = optarg; break;
		case 'g': a.gba_ks = optarg; break;
		case 'r': a.rand_hex = optarg; break;
		case 'm': a.impi = optarg; break;
		case 'n': a.naf_fqdn = optarg; break;
		case 'u': a.ua_hex = optarg; break;
		case 'U': a.users = optarg; break;
		case 'A': a.nas = optarg; break;
		case 'D': a.domain = optarg; break;
		case 'L': a.id_len = optarg; break;
		case 'J': a.stats_fmt = KMSCTL_STATS_JSON; break;
		case 'K': a.key_id = optarg; break;
		case 'p': a.pair = optarg; break;
		case 'O': a.overlap = optarg; break;
		case 'F': a.ids = optarg; break;
		case 'P': a.stats_fmt = KMSCTL_STATS_PROMETHEUS; break;
		case 'h': usage(stdout); return 0;
		case KMS_OPT_VERSION:
			kms_version_print(stdout, "kmsctl");
			printf("%s\n", mdb_version(NULL, NULL, NULL));
			return 0;
		default: usage(stderr); return 2;
		}
	}
	/* One command; "audit" and "ibe" may take a word after it,
	 * "policy" a verb and its name=value words. */
	if (optind == argc ||
	    (strcmp(argv[optind], "policy") &&
	     (argc - optind > 2 ||
	      (argc - optind == 2 && strcmp(argv[optind], "audit") &&
	       strcmp(argv[optind], "ibe"))))) {
		usage(stderr);
		return 2;
	}
	cmd = argv[optind];
	if (!strcmp(cmd, "gba-derive"))
		return cmd_gba_derive(&a);
	kms_config_defaults(&a.cfg);
	if (a.config && kms_config_load(&a.cfg, a.config, err, sizeof(err))) {
		fprintf(stderr, "kmsctl: %s\n", err);
		return 2;
	}
	if (!strcmp(cmd, "init"))
		return cmd_init(&a);
	if (!strcmp(cmd, "enroll"))
		return cmd_enroll(&a);
	if (!strcmp(cmd, "enroll-bulk"))
		return cmd_enroll_bulk(&a);
	if (!strcmp(cmd, "revoke"))
		return cmd_revoke(&a);
	if (!strcmp(cmd, "rotate"))
		return cmd_rotate(&a);
	if (!strcmp(cmd, "show") || !strcmp(cmd, "list") || !strcmp(cmd, "audit"))
		return cmd_read(&a, cmd, argc - optind == 2 ? argv[optind + 1] : NULL);
	if (!strcmp(cmd, "ibe"))
		return cmd_ibe(&a, argc - optind == 2 ? argv[optind + 1] : "");
	if (!strcmp(cmd, "kek-rotate") || !strcmp(cmd, "kek-status"))
		return cmd_kek(&a, !strcmp(cmd, "kek-rotate"));
	if (!strcmp(cmd, "stats") || !strcmp(cmd, "policy")) {
		char path[128];

		if (kms_config_ctl_path(&a.cfg, path, sizeof(path))) {
			fprintf(stderr, "kmsctl: control socket path too long\n");
			return 2;
		}
		if (!strcmp(cmd, "policy"))
			return kmsctl_policy(path, a.domain, a.pair, argc - optind - 1,
					     argv + optind + 1,
					     a.stats_fmt == KMSCTL_STATS_JSON);
		return kmsctl_stats(path, a.stats_fmt);
	}
	fprintf(stderr, "kmsctl: unknown command '%s'\n", cmd);
	usage(stderr);
	return 2;
}
