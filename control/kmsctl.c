// SPDX-License-Identifier: Apache-2.0
/*
 * kmsctl: operator tool working directly on the token and the keystore.
 *
 *   kmsctl -c CONF init
 *   kmsctl -c CONF enroll --kind user|as --id ID --out KEYFILE
 *                         [--import KEYFILE | --gba-ks FILE --rand HEX
 *                          --impi IMPI --naf-fqdn FQDN --ua-id HEX]
 *   kmsctl -c CONF revoke --id ID
 *   kmsctl -c CONF show --id ID
 *   kmsctl -c CONF list
 *   kmsctl -c CONF audit
 *   kmsctl gba-derive --gba-ks FILE --rand HEX --impi IMPI --naf-fqdn FQDN
 *                     --ua-id HEX --id ID --out KEYFILE
 *
 * The HSM PIN comes from hsm.pin_file or $KMS_PIN. Enrolment writes the
 * party's copy of its key to KEYFILE (mode 0600): it stands in for GBA or
 * another bootstrap. LMDB allows this tool to write while kmsd runs.
 */
#include <getopt.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kms_config.h"
#include "kms_err.h"
#include "kms_gba.h"
#include "kms_hsm.h"
#include "kms_keyfile.h"
#include "kms_ks.h"
#include "kms_log.h"
#include "kms_secmem.h"

struct args {
	const char *config, *kind, *id, *out, *import, *gba_ks, *rand_hex,
		*impi, *naf_fqdn, *ua_hex;
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
		"usage: kmsctl [-c CONFIG] COMMAND [options]\n"
		"commands:\n"
		"  init                         create the KEK in the token and an empty store\n"
		"  enroll --kind user|as --id ID --out KEYFILE\n"
		"         [--import KEYFILE]    use the key of an existing key file\n"
		"         [--gba-ks FILE --rand HEX --impi IMPI --naf-fqdn FQDN --ua-id HEX]\n"
		"                               use Ks_NAF (TS 33.220) as the party key\n"
		"  revoke --id ID               refuse the party from its next request on\n"
		"  show --id ID                 one party\n"
		"  list                         every party\n"
		"  audit                        every audit record, oldest first\n"
		"  gba-derive --gba-ks FILE --rand HEX --impi IMPI --naf-fqdn FQDN --ua-id HEX\n"
		"         --id ID --out KEYFILE   the UE side of GBA: write Ks_NAF as a key file\n"
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

static int cmd_revoke(struct args *a)
{
	struct kms_ks *ks = NULL;
	struct kms_ks_txn *txn;
	struct kms_party p;
	struct kms_audit au;
	struct kms_id id;
	int rc;

	if (!a->id || kms_id_from_str(a->id, &id)) {
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

static int print_party(const struct kms_id *id, const struct kms_party *p,
		       void *arg)
{
	(void)arg;
	printf("%.*s kind=%s status=%s gen=%u created_ms=%llu\n", id->len,
	       (const char *)id->p, p->kind == KMS_PARTY_AS ? "as" : "user",
	       p->status == KMS_PARTY_ACTIVE ? "active" : "revoked", p->gen,
	       (unsigned long long)p->created_ms);
	return 0;
}

static int print_audit(const struct kms_audit *au, void *arg)
{
	static const char *const ev[] = { "?", "enroll", "revoke", "key-new",
					  "key-reuse", "key-retrieve", "init" };
	char kid[2 * KMS_KEY_ID_LEN + 1];

	(void)arg;
	kms_hex_encode(au->key_id, KMS_KEY_ID_LEN, kid);
	printf("%llu %s actor=%.*s a=%.*s b=%.*s key_id=%s k_gen=%u\n",
	       (unsigned long long)au->time_ms,
	       au->event < sizeof(ev) / sizeof(ev[0]) ? ev[au->event] : "?",
	       au->actor_len, au->actor, au->id_a_len, au->id_a, au->id_b_len,
	       au->id_b, kid, au->k_gen);
	return 0;
}

static int cmd_read(struct args *a, const char *what)
{
	struct kms_ks *ks = NULL;
	struct kms_ks_txn *txn;
	struct kms_party p;
	struct kms_id id;
	int rc;

	if (!strcmp(what, "show") && (!a->id || kms_id_from_str(a->id, &id))) {
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
		{ "help", no_argument, NULL, 'h' },
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
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc - 1) {
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
	if (!strcmp(cmd, "revoke"))
		return cmd_revoke(&a);
	if (!strcmp(cmd, "show") || !strcmp(cmd, "list") || !strcmp(cmd, "audit"))
		return cmd_read(&a, cmd);
	fprintf(stderr, "kmsctl: unknown command '%s'\n", cmd);
	usage(stderr);
	return 2;
}
