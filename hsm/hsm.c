// SPDX-License-Identifier: Apache-2.0
/*
 * PKCS#11 through a dlopen()ed module: login, the KEK, and the wrap/unwrap
 * primitives every other module builds on. Contract in kms_hsm.h.
 *
 * Nothing here knows which module is loaded. Every PKCS#11 call made on a
 * session goes through P11() so kms_hsm_session_calls() counts it; calls
 * made while opening the kms_hsm are counted on its login session.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hsm_priv.h"
#include "kms_err.h"
#include "kms_log.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define PIN_MAX 256          /* bytes, including room for a NUL */
#define TOKEN_LABEL_LEN 32   /* CK_TOKEN_INFO.label, blank padded */
#define MAX_MODULES 8        /* distinct modules one process may load */
#define SESSION_FLAGS (CKF_SERIAL_SESSION | CKF_RW_SESSION)

/* Every PKCS#11 call on a session: counted, and a session the module has
 * lost is marked broken (reopened before the session's next use). */
#define P11(s, fn, ...) p11_seen((s), ((s)->calls++, (s)->p11->fn(__VA_ARGS__)))

static CK_RV p11_seen(struct kms_hsm_session *s, CK_RV rv)
{
	switch (rv) {
	case CKR_SESSION_HANDLE_INVALID:
	case CKR_SESSION_CLOSED:
	case CKR_DEVICE_REMOVED:
	case CKR_DEVICE_ERROR:
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_TOKEN_NOT_RECOGNIZED:
		if (s->h != CK_INVALID_HANDLE && s != &s->hsm->login)
			s->broken = 1;
		break;
	default:
		break;
	}
	return rv;
}

static const struct {
	CK_RV rv;
	const char *name;
} ckr_names[] = {
#define CKR(x) { x, #x }
	CKR(CKR_OK),
	CKR(CKR_CANCEL),
	CKR(CKR_HOST_MEMORY),
	CKR(CKR_SLOT_ID_INVALID),
	CKR(CKR_GENERAL_ERROR),
	CKR(CKR_FUNCTION_FAILED),
	CKR(CKR_ARGUMENTS_BAD),
	CKR(CKR_CANT_LOCK),
	CKR(CKR_ATTRIBUTE_READ_ONLY),
	CKR(CKR_ATTRIBUTE_SENSITIVE),
	CKR(CKR_ATTRIBUTE_TYPE_INVALID),
	CKR(CKR_ATTRIBUTE_VALUE_INVALID),
	CKR(CKR_ACTION_PROHIBITED),
	CKR(CKR_DATA_INVALID),
	CKR(CKR_DATA_LEN_RANGE),
	CKR(CKR_DEVICE_ERROR),
	CKR(CKR_DEVICE_MEMORY),
	CKR(CKR_DEVICE_REMOVED),
	CKR(CKR_ENCRYPTED_DATA_INVALID),
	CKR(CKR_ENCRYPTED_DATA_LEN_RANGE),
	CKR(CKR_FUNCTION_NOT_SUPPORTED),
	CKR(CKR_KEY_HANDLE_INVALID),
	CKR(CKR_KEY_SIZE_RANGE),
	CKR(CKR_KEY_TYPE_INCONSISTENT),
	CKR(CKR_KEY_FUNCTION_NOT_PERMITTED),
	CKR(CKR_KEY_NOT_WRAPPABLE),
	CKR(CKR_KEY_UNEXTRACTABLE),
	CKR(CKR_MECHANISM_INVALID),
	CKR(CKR_MECHANISM_PARAM_INVALID),
	CKR(CKR_OBJECT_HANDLE_INVALID),
	CKR(CKR_OPERATION_ACTIVE),
	CKR(CKR_OPERATION_NOT_INITIALIZED),
	CKR(CKR_PIN_INCORRECT),
	CKR(CKR_PIN_INVALID),
	CKR(CKR_PIN_LEN_RANGE),
	CKR(CKR_PIN_EXPIRED),
	CKR(CKR_PIN_LOCKED),
	CKR(CKR_SESSION_CLOSED),
	CKR(CKR_SESSION_COUNT),
	CKR(CKR_SESSION_HANDLE_INVALID),
	CKR(CKR_SESSION_READ_ONLY),
	CKR(CKR_TEMPLATE_INCOMPLETE),
	CKR(CKR_TEMPLATE_INCONSISTENT),
	CKR(CKR_TOKEN_NOT_PRESENT),
	CKR(CKR_TOKEN_NOT_RECOGNIZED),
	CKR(CKR_TOKEN_WRITE_PROTECTED),
	CKR(CKR_UNWRAPPING_KEY_HANDLE_INVALID),
	CKR(CKR_UNWRAPPING_KEY_SIZE_RANGE),
	CKR(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT),
	CKR(CKR_USER_ALREADY_LOGGED_IN),
	CKR(CKR_USER_NOT_LOGGED_IN),
	CKR(CKR_USER_PIN_NOT_INITIALIZED),
	CKR(CKR_USER_TYPE_INVALID),
	CKR(CKR_USER_ANOTHER_ALREADY_LOGGED_IN),
	CKR(CKR_WRAPPED_KEY_INVALID),
	CKR(CKR_WRAPPED_KEY_LEN_RANGE),
	CKR(CKR_WRAPPING_KEY_HANDLE_INVALID),
	CKR(CKR_WRAPPING_KEY_SIZE_RANGE),
	CKR(CKR_WRAPPING_KEY_TYPE_INCONSISTENT),
	CKR(CKR_RANDOM_NO_RNG),
	CKR(CKR_BUFFER_TOO_SMALL),
	CKR(CKR_CRYPTOKI_NOT_INITIALIZED),
	CKR(CKR_CRYPTOKI_ALREADY_INITIALIZED),
	CKR(CKR_FUNCTION_REJECTED),
#undef CKR
};

static const char *ckr_name(CK_RV rv)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(ckr_names); i++)
		if (ckr_names[i].rv == rv)
			return ckr_names[i].name;
	return rv & CKR_VENDOR_DEFINED ? "CKR_VENDOR_DEFINED" : "CKR_(unknown)";
}

static void log_ckr(const char *call, CK_RV rv)
{
	/* Per request while an HSM is failing: rate limited. */
	KMS_ERR_RL("hsm: %s failed: %s (0x%lx)", call, ckr_name(rv),
		   (unsigned long)rv);
}

/*
 * C_Initialize and C_Finalize act on the whole process, yet a process may
 * hold several kms_hsm on one module (kmsctl, tests). Users are counted per
 * function list so only the last close finalizes. A module that someone
 * else in the process had already initialised is used but never finalized.
 */
static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	CK_FUNCTION_LIST_PTR p11;
	unsigned int users;
	bool finalize;
} inits[MAX_MODULES];

static int module_init(CK_FUNCTION_LIST_PTR p11)
{
	CK_C_INITIALIZE_ARGS args = { .flags = CKF_OS_LOCKING_OK };
	int slot = -1, ret = KMS_OK;
	size_t i;
	CK_RV rv;

	pthread_mutex_lock(&init_lock);
	for (i = 0; i < MAX_MODULES; i++) {
		if (inits[i].p11 == p11) {
			inits[i].users++;
			goto out;
		}
		if (!inits[i].p11 && slot < 0)
			slot = (int)i;
	}
	if (slot < 0) {
		KMS_ERR("hsm: more than %d PKCS#11 modules loaded", MAX_MODULES);
		ret = KMS_ERR_HSM;
		goto out;
	}
	rv = p11->C_Initialize(&args);
	if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		log_ckr("C_Initialize", rv);
		ret = KMS_ERR_HSM;
		goto out;
	}
	inits[slot].p11 = p11;
	inits[slot].users = 1;
	inits[slot].finalize = rv == CKR_OK;
out:
	pthread_mutex_unlock(&init_lock);
	return ret;
}

static void module_fini(CK_FUNCTION_LIST_PTR p11)
{
	size_t i;
	CK_RV rv;

	pthread_mutex_lock(&init_lock);
	for (i = 0; i < MAX_MODULES && inits[i].p11 != p11; i++)
		;
	if (i == MAX_MODULES || --inits[i].users > 0)
		goto out;
	if (inits[i].finalize) {
		rv = p11->C_Finalize(NULL);
		if (rv != CKR_OK)
			log_ckr("C_Finalize", rv);
	}
	inits[i].p11 = NULL;
out:
	pthread_mutex_unlock(&init_lock);
}

static int load_module(struct kms_hsm *hsm, const char *path)
{
	CK_C_GetFunctionList get_list;
	CK_FUNCTION_LIST_PTR p11 = NULL;
	int ret = KMS_ERR_CONFIG;
	CK_RV rv;

	hsm->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!hsm->dl) {
		KMS_ERR("hsm: cannot load PKCS#11 module: %s", dlerror());
		goto out;
	}
	get_list = (CK_C_GetFunctionList)dlsym(hsm->dl, "C_GetFunctionList");
	if (!get_list) {
		KMS_ERR("hsm: %s is not a PKCS#11 module (no C_GetFunctionList)",
			path);
		goto out;
	}
	rv = get_list(&p11);
	if (rv != CKR_OK || !p11) {
		log_ckr("C_GetFunctionList", rv);
		goto out;
	}
	ret = module_init(p11);
	if (ret != KMS_OK)
		goto out;
	/* Set only once initialised: kms_hsm_close() finalizes when set. */
	hsm->p11 = p11;
	hsm->login.p11 = p11;
out:
	return ret;
}

static int find_slot(struct kms_hsm *hsm, const char *label)
{
	struct kms_hsm_session *ls = &hsm->login;
	unsigned char want[TOKEN_LABEL_LEN];
	CK_SLOT_ID *slots = NULL;
	size_t len = strlen(label);
	CK_ULONG n = 0, i;
	int ret = KMS_ERR_CONFIG, tries;
	CK_TOKEN_INFO ti;
	CK_RV rv;

	if (len > TOKEN_LABEL_LEN) {
		KMS_ERR("hsm: token label '%s' is longer than %d bytes", label,
			TOKEN_LABEL_LEN);
		goto out;
	}
	memset(want, ' ', sizeof(want));
	memcpy(want, label, len);

	/* Tokens may appear between the two calls: retry a few times. */
	for (tries = 0; tries < 4; tries++) {
		rv = P11(ls, C_GetSlotList, CK_TRUE, NULL, &n);
		if (rv != CKR_OK || n == 0)
			break;
		free(slots);
		slots = calloc(n, sizeof(*slots));
		if (!slots) {
			ret = KMS_ERR_NOMEM;
			goto out;
		}
		rv = P11(ls, C_GetSlotList, CK_TRUE, slots, &n);
		if (rv != CKR_BUFFER_TOO_SMALL)
			break;
	}
	if (rv != CKR_OK) {
		log_ckr("C_GetSlotList", rv);
		ret = KMS_ERR_HSM;
		goto out;
	}
	for (i = 0; i < n; i++) {
		rv = P11(ls, C_GetTokenInfo, slots[i], &ti);
		if (rv != CKR_OK) {
			KMS_WARN("hsm: C_GetTokenInfo(slot %lu) failed: %s",
				 (unsigned long)slots[i], ckr_name(rv));
			continue;
		}
		if (memcmp(ti.label, want, sizeof(want)) == 0) {
			hsm->slot = slots[i];
			ret = KMS_OK;
			goto out;
		}
	}
	KMS_ERR("hsm: no token labelled '%s' among the module's %lu token(s)",
		label, (unsigned long)n);
out:
	free(slots);
	return ret;
}

/* First line of @path, without its line end, into @pin (NUL-terminated). */
static int read_pin_file(const char *path, char *pin, size_t cap, size_t *len)
{
	size_t got = 0, n;
	int fd, ret = KMS_ERR_PIN;
	struct stat st;
	ssize_t r;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		KMS_ERR("hsm: cannot open PIN file %s: %s", path, strerror(errno));
		goto out;
	}
	if (fstat(fd, &st) == 0 && (st.st_mode & 077))
		KMS_WARN("hsm: PIN file %s is readable by group or others", path);
	while (got < cap - 1) {
		r = read(fd, pin + got, cap - 1 - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			KMS_ERR("hsm: cannot read PIN file %s: %s", path,
				strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		got += (size_t)r;
		if (memchr(pin, '\n', got))
			break;
	}
	pin[got] = '\0';
	n = strcspn(pin, "\n");
	if (n == got && got == cap - 1) {
		KMS_ERR("hsm: PIN in %s is longer than %d bytes", path, PIN_MAX - 1);
		goto out;
	}
	if (n > 0 && pin[n - 1] == '\r')
		n--;
	pin[n] = '\0';
	if (n == 0) {
		KMS_ERR("hsm: PIN file %s is empty", path);
		goto out;
	}
	*len = n;
	ret = KMS_OK;
out:
	if (fd >= 0)
		close(fd);
	return ret;
}

static int read_pin(const struct kms_hsm_config *cfg, char *pin, size_t cap,
		    size_t *len)
{
	const char *name = cfg->pin_env ? cfg->pin_env : "KMS_PIN";
	const char *v;
	size_t n;

	if (cfg->pin_file)
		return read_pin_file(cfg->pin_file, pin, cap, len);
	v = getenv(name);
	if (!v || !*v) {
		KMS_ERR("hsm: no PIN: set $%s or configure a PIN file", name);
		return KMS_ERR_PIN;
	}
	n = strlen(v);
	if (n >= cap) {
		KMS_ERR("hsm: PIN in $%s is longer than %zu bytes", name, cap - 1);
		return KMS_ERR_PIN;
	}
	memcpy(pin, v, n + 1);
	*len = n;
	return KMS_OK;
}

static int login(struct kms_hsm *hsm, const struct kms_hsm_config *cfg)
{
	struct kms_hsm_session *ls = &hsm->login;
	char pin[PIN_MAX];
	size_t pin_len = 0;
	int ret;
	CK_RV rv;

	ret = read_pin(cfg, pin, sizeof(pin), &pin_len);
	if (ret != KMS_OK)
		goto out;
	rv = P11(ls, C_OpenSession, hsm->slot, SESSION_FLAGS, NULL, NULL, &ls->h);
	if (rv != CKR_OK) {
		log_ckr("C_OpenSession", rv);
		ret = KMS_ERR_HSM;
		goto out;
	}
	rv = P11(ls, C_Login, ls->h, CKU_USER, (CK_UTF8CHAR_PTR)pin, pin_len);
	switch (rv) {
	case CKR_OK:
	case CKR_USER_ALREADY_LOGGED_IN: /* another kms_hsm of this process */
		ret = KMS_OK;
		break;
	case CKR_PIN_INCORRECT:
	case CKR_PIN_INVALID:
	case CKR_PIN_LEN_RANGE:
	case CKR_PIN_EXPIRED:
	case CKR_PIN_LOCKED:
	case CKR_USER_PIN_NOT_INITIALIZED:
		log_ckr("C_Login", rv);
		ret = KMS_ERR_PIN;
		break;
	default:
		log_ckr("C_Login", rv);
		ret = KMS_ERR_HSM;
		break;
	}
out:
	explicit_bzero(pin, sizeof(pin));
	return ret;
}

int kms_hsm_open(const struct kms_hsm_config *cfg, struct kms_hsm **out)
{
	struct kms_hsm *hsm = NULL;
	int ret = KMS_ERR_INVAL;

	if (!cfg || !out)
		goto out;
	ret = KMS_ERR_CONFIG;
	if (!cfg->module || !cfg->token_label || !cfg->kek_label ||
	    !*cfg->kek_label) {
		KMS_ERR("hsm: configuration needs a module, a token label and "
			"a KEK label");
		goto out;
	}
	hsm = calloc(1, sizeof(*hsm));
	if (!hsm) {
		ret = KMS_ERR_NOMEM;
		goto out;
	}
	pthread_mutex_init(&hsm->lock, NULL);
	pthread_rwlock_init(&hsm->kek_rw, NULL);
	hsm->login.hsm = hsm;
	hsm->login.kek = CK_INVALID_HANDLE;
	hsm->kek_label = strdup(cfg->kek_label);
	hsm->kek_next_label = malloc(strlen(cfg->kek_label) + sizeof(".next"));
	if (hsm->kek_next_label)
		sprintf(hsm->kek_next_label, "%s.next", cfg->kek_label);
	if (!hsm->kek_label || !hsm->kek_next_label) {
		ret = KMS_ERR_NOMEM;
		goto out;
	}
	ret = load_module(hsm, cfg->module);
	if (ret != KMS_OK)
		goto out;
	ret = find_slot(hsm, cfg->token_label);
	if (ret != KMS_OK)
		goto out;
	ret = login(hsm, cfg);
	if (ret != KMS_OK)
		goto out;
	KMS_DEBUG("hsm: logged in to token '%s' (slot %lu)", cfg->token_label,
		 (unsigned long)hsm->slot);
	*out = hsm;
	hsm = NULL;
out:
	kms_hsm_close(hsm);
	return ret;
}

void kms_hsm_close(struct kms_hsm *hsm)
{
	CK_RV rv;

	if (!hsm)
		return;
	if (hsm->login.h != CK_INVALID_HANDLE) {
		rv = P11(&hsm->login, C_CloseSession, hsm->login.h);
		if (rv != CKR_OK)
			log_ckr("C_CloseSession", rv);
	}
	if (hsm->p11)
		module_fini(hsm->p11);
	if (hsm->dl)
		dlclose(hsm->dl);
	free(hsm->kek_label);
	free(hsm->kek_next_label);
	pthread_mutex_destroy(&hsm->lock);
	pthread_rwlock_destroy(&hsm->kek_rw);
	free(hsm);
}

/* Look a secret key up by label; *n is how many matched (0..2). */
static int find_label(struct kms_hsm_session *s, const char *label,
		      CK_OBJECT_HANDLE *kek, CK_ULONG *n)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_LABEL, (void *)label, strlen(label) },
	};
	CK_OBJECT_HANDLE found[2];
	int ret = KMS_ERR_HSM;
	CK_RV rv, rv_final;

	*n = 0;
	rv = P11(s, C_FindObjectsInit, s->h, tmpl, ARRAY_SIZE(tmpl));
	if (rv != CKR_OK) {
		log_ckr("C_FindObjectsInit", rv);
		goto out;
	}
	rv = P11(s, C_FindObjects, s->h, found, ARRAY_SIZE(found), n);
	rv_final = P11(s, C_FindObjectsFinal, s->h);
	if (rv != CKR_OK) {
		log_ckr("C_FindObjects", rv);
		goto out;
	}
	if (rv_final != CKR_OK) {
		log_ckr("C_FindObjectsFinal", rv_final);
		goto out;
	}
	if (*n > 0)
		*kek = found[0];
	ret = KMS_OK;
out:
	return ret;
}

/*
 * The session's KEKs. Normally one, labelled kek_label. During a rotation
 * (an object labelled "<kek_label>.next" exists) new blobs are wrapped
 * under the next KEK and a blob is unwrapped under either. After a crash
 * between destroying the old KEK and relabelling the new one, the next KEK
 * alone is the KEK.
 */
static int find_keks(struct kms_hsm_session *s)
{
	CK_OBJECT_HANDLE base = CK_INVALID_HANDLE, next = CK_INVALID_HANDLE;
	CK_ULONG nb = 0, nn = 0;
	uint32_t epoch = __atomic_load_n(&s->hsm->kek_epoch, __ATOMIC_ACQUIRE);
	int ret;

	ret = find_label(s, s->hsm->kek_label, &base, &nb);
	if (ret == KMS_OK)
		ret = find_label(s, s->hsm->kek_next_label, &next, &nn);
	if (ret != KMS_OK)
		return ret;
	if (nb == 0 && nn == 0) {
		KMS_ERR("hsm: no KEK labelled '%s' on the token (run `kmsctl init`)",
			s->hsm->kek_label);
		return KMS_ERR_NOTFOUND;
	}
	if (nb > 1 || nn > 1)
		KMS_WARN("hsm: several keys labelled '%s': using the first",
			 nb > 1 ? s->hsm->kek_label : s->hsm->kek_next_label);
	s->kek = nn ? next : base;
	s->kek_alt = nn && nb ? base : CK_INVALID_HANDLE;
	s->epoch = epoch;
	return KMS_OK;
}

/*
 * A session the module lost (an HSM fault, a token removed and put back):
 * close what is left of it and open a new one; its KEK handles are looked
 * up again and its generation moves on, so object handles made in the old
 * session (crypto_hsm.c's cached keys) are known to be dead.
 */
static int revive(struct kms_hsm_session *s)
{
	struct kms_hsm *hsm = s->hsm;
	CK_SESSION_HANDLE h = CK_INVALID_HANDLE;
	CK_RV rv;
	int ret;

	pthread_mutex_lock(&hsm->lock);
	if (s->h != CK_INVALID_HANDLE) {
		s->calls++;
		s->p11->C_CloseSession(s->h); /* may already be gone */
		s->h = CK_INVALID_HANDLE;
	}
	s->calls++;
	rv = s->p11->C_OpenSession(hsm->slot, SESSION_FLAGS, NULL, NULL, &h);
	pthread_mutex_unlock(&hsm->lock);
	if (rv != CKR_OK) {
		if (!s->revive_failed++)
			KMS_ERR("hsm: cannot reopen a lost session: %s (retried "
				"at each use)", ckr_name(rv));
		return KMS_ERR_HSM;
	}
	s->h = h;
	s->broken = 0;
	ret = find_keks(s);
	if (ret != KMS_OK) {
		s->broken = 1;
		return KMS_ERR_HSM;
	}
	s->gen++;
	s->revive_failed = 0;
	KMS_WARN("hsm: session reopened (generation %u)", s->gen);
	return KMS_OK;
}

/* Before any use: a lost session reopened, the KEKs current after a
 * rotation step. */
static int keks_current(struct kms_hsm_session *s)
{
	if (s->broken && revive(s) != KMS_OK)
		return KMS_ERR_HSM;
	if (__atomic_load_n(&s->hsm->kek_epoch, __ATOMIC_ACQUIRE) == s->epoch)
		return KMS_OK;
	return find_keks(s);
}

uint32_t kms_hsm_session_generation(const struct kms_hsm_session *s)
{
	return s->gen;
}

static int session_ready_unlocked(struct kms_hsm_session *s)
{
	return keks_current(s);
}

int kms_hsm_session_ready(struct kms_hsm_session *s)
{
	int ret;

	pthread_rwlock_rdlock(&s->hsm->kek_rw);
	ret = session_ready_unlocked(s);
	pthread_rwlock_unlock(&s->hsm->kek_rw);
	return ret;
}

static void kek_epoch_bump(struct kms_hsm *hsm)
{
	__atomic_add_fetch(&hsm->kek_epoch, 1, __ATOMIC_RELEASE);
}

/* A new KEK token object labelled @p label (none may exist yet). */
static int kek_make(struct kms_hsm *hsm, const char *label)
{
	struct kms_hsm_session *s = &hsm->login;
	CK_MECHANISM mech = { CKM_AES_KEY_GEN, NULL, 0 };
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE type = CKK_AES;
	CK_ULONG len = KMS_HSM_KEY_LEN;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_KEY_TYPE, &type, sizeof(type) },
		{ CKA_VALUE_LEN, &len, sizeof(len) },
		{ CKA_LABEL, (void *)label, strlen(label) },
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &no, sizeof(no) },
		{ CKA_WRAP, &yes, sizeof(yes) },
		{ CKA_UNWRAP, &yes, sizeof(yes) },
		/* A KEK only wraps: no raw encryption oracle under it. */
		{ CKA_ENCRYPT, &no, sizeof(no) },
		{ CKA_DECRYPT, &no, sizeof(no) },
	};
	CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
	CK_ULONG n;
	int ret;
	CK_RV rv;

	pthread_mutex_lock(&hsm->lock);
	ret = find_label(s, label, &key, &n);
	if (ret != KMS_OK)
		goto out;
	if (n > 0) {
		KMS_INFO("hsm: a key labelled '%s' already exists", label);
		ret = KMS_ERR_EXISTS;
		goto out;
	}
	rv = P11(s, C_GenerateKey, s->h, &mech, tmpl, ARRAY_SIZE(tmpl), &key);
	if (rv != CKR_OK) {
		log_ckr("C_GenerateKey", rv);
		ret = KMS_ERR_HSM;
		goto out;
	}
	KMS_INFO("hsm: created KEK '%s'", label);
out:
	pthread_mutex_unlock(&hsm->lock);
	return ret;
}

int kms_hsm_kek_create(struct kms_hsm *hsm)
{
	int ret;

	pthread_rwlock_wrlock(&hsm->kek_rw);
	ret = kek_make(hsm, hsm->kek_label);
	pthread_rwlock_unlock(&hsm->kek_rw);
	return ret;
}

int kms_hsm_kek_state(struct kms_hsm *hsm, unsigned *current,
		      unsigned *next)
{
	CK_OBJECT_HANDLE h;
	CK_ULONG nb = 0, nn = 0;
	int ret;

	pthread_mutex_lock(&hsm->lock);
	ret = find_label(&hsm->login, hsm->kek_label, &h, &nb);
	if (ret == KMS_OK)
		ret = find_label(&hsm->login, hsm->kek_next_label, &h, &nn);
	pthread_mutex_unlock(&hsm->lock);
	if (ret == KMS_OK) {
		*current = (unsigned)nb;
		*next = (unsigned)nn;
	}
	return ret;
}

int kms_hsm_kek_next_create(struct kms_hsm *hsm)
{
	int ret;

	/* No session uses or looks up a KEK while the token's KEKs change. */
	pthread_rwlock_wrlock(&hsm->kek_rw);
	ret = kek_make(hsm, hsm->kek_next_label);
	/* Sessions wrap under the next KEK from their next call on. */
	if (ret == KMS_OK || ret == KMS_ERR_EXISTS)
		kek_epoch_bump(hsm);
	pthread_rwlock_unlock(&hsm->kek_rw);
	return ret;
}

int kms_hsm_kek_finish(struct kms_hsm *hsm)
{
	struct kms_hsm_session *s = &hsm->login;
	CK_OBJECT_HANDLE base = CK_INVALID_HANDLE, next = CK_INVALID_HANDLE;
	CK_ULONG nb = 0, nn = 0;
	CK_ATTRIBUTE label = { CKA_LABEL, hsm->kek_label,
			       strlen(hsm->kek_label) };
	int ret;
	CK_RV rv;

	/* No session uses or looks up a KEK while the old one is destroyed
	 * and the next one relabelled (the epoch moves on inside). */
	pthread_rwlock_wrlock(&hsm->kek_rw);
	pthread_mutex_lock(&hsm->lock);
	ret = find_label(s, hsm->kek_label, &base, &nb);
	if (ret == KMS_OK)
		ret = find_label(s, hsm->kek_next_label, &next, &nn);
	if (ret != KMS_OK)
		goto out;
	if (nn == 0) {
		ret = nb ? KMS_OK : KMS_ERR_NOTFOUND; /* nothing to finish */
		goto out;
	}
	/* Old KEK first: a crash after this leaves the next KEK alone, which
	 * find_keks() then takes as the KEK. */
	if (nb) {
		rv = P11(s, C_DestroyObject, s->h, base);
		if (rv != CKR_OK) {
			log_ckr("C_DestroyObject (old KEK)", rv);
			ret = KMS_ERR_HSM;
			goto out;
		}
	}
	rv = P11(s, C_SetAttributeValue, s->h, next, &label, 1);
	if (rv != CKR_OK) {
		log_ckr("C_SetAttributeValue (KEK label)", rv);
		ret = KMS_ERR_HSM;
		goto out;
	}
	KMS_INFO("hsm: KEK rotated: the old KEK is destroyed, '%s' is the "
		 "new one", hsm->kek_label);
out:
	pthread_mutex_unlock(&hsm->lock);
	kek_epoch_bump(hsm);
	pthread_rwlock_unlock(&hsm->kek_rw);
	return ret;
}

uint32_t kms_hsm_kek_epoch(const struct kms_hsm_session *s)
{
	return __atomic_load_n(&s->hsm->kek_epoch, __ATOMIC_ACQUIRE);
}

int kms_hsm_session_open(struct kms_hsm *hsm, struct kms_hsm_session **out)
{
	struct kms_hsm_session *s = NULL;
	int ret = KMS_ERR_INVAL;
	CK_RV rv;

	if (!hsm || !out)
		goto out;
	ret = KMS_ERR_NOMEM;
	s = calloc(1, sizeof(*s));
	if (!s)
		goto out;
	s->hsm = hsm;
	s->p11 = hsm->p11;
	s->kek = CK_INVALID_HANDLE;
	s->kek_alt = CK_INVALID_HANDLE;
	pthread_mutex_lock(&hsm->lock);
	rv = P11(s, C_OpenSession, hsm->slot, SESSION_FLAGS, NULL, NULL, &s->h);
	pthread_mutex_unlock(&hsm->lock);
	if (rv != CKR_OK) {
		log_ckr("C_OpenSession", rv);
		ret = KMS_ERR_HSM;
		goto out;
	}
	pthread_rwlock_rdlock(&hsm->kek_rw);
	ret = find_keks(s);
	pthread_rwlock_unlock(&hsm->kek_rw);
	if (ret != KMS_OK)
		goto out;
	*out = s;
	s = NULL;
out:
	kms_hsm_session_close(s);
	return ret;
}

void kms_hsm_session_close(struct kms_hsm_session *s)
{
	CK_RV rv;

	if (!s)
		return;
	if (s->h != CK_INVALID_HANDLE) {
		pthread_mutex_lock(&s->hsm->lock);
		rv = P11(s, C_CloseSession, s->h);
		pthread_mutex_unlock(&s->hsm->lock);
		if (rv != CKR_OK)
			log_ckr("C_CloseSession", rv);
	}
	free(s);
}

static int random_unlocked(struct kms_hsm_session *s, uint8_t *buf, size_t len)
{
	CK_RV rv;

	if (len == 0)
		return KMS_OK;
	if (keks_current(s) != KMS_OK)
		return KMS_ERR_HSM;
	rv = P11(s, C_GenerateRandom, s->h, buf, len);
	if (rv != CKR_OK) {
		log_ckr("C_GenerateRandom", rv);
		return KMS_ERR_HSM;
	}
	return KMS_OK;
}

int kms_hsm_random(struct kms_hsm_session *s, uint8_t *buf, size_t len)
{
	int ret;

	pthread_rwlock_rdlock(&s->hsm->kek_rw);
	ret = random_unlocked(s, buf, len);
	pthread_rwlock_unlock(&s->hsm->kek_rw);
	return ret;
}

/* Destroy a temporary session object, if one was made. */
static int destroy_tmp(struct kms_hsm_session *s, CK_OBJECT_HANDLE obj)
{
	CK_RV rv;

	if (obj == CK_INVALID_HANDLE)
		return KMS_OK;
	rv = P11(s, C_DestroyObject, s->h, obj);
	if (rv != CKR_OK) {
		log_ckr("C_DestroyObject", rv);
		return KMS_ERR_HSM;
	}
	return KMS_OK;
}

static int wrap_unlocked(struct kms_hsm_session *s, const uint8_t key[KMS_HSM_KEY_LEN],
		 uint8_t blob[KMS_HSM_BLOB_LEN])
{
	CK_MECHANISM mech = { CKM_AES_KEY_WRAP, NULL, 0 };
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE type = CKK_AES;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	/* The token copies CKA_VALUE; the caller's buffer is only read. */
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_KEY_TYPE, &type, sizeof(type) },
		{ CKA_TOKEN, &no, sizeof(no) },
		{ CKA_SENSITIVE, &no, sizeof(no) },
		{ CKA_EXTRACTABLE, &yes, sizeof(yes) },
		{ CKA_VALUE, (void *)key, KMS_HSM_KEY_LEN },
	};
	CK_OBJECT_HANDLE tmp = CK_INVALID_HANDLE;
	uint8_t wrapped[KMS_HSM_BLOB_LEN];
	CK_ULONG wrapped_len = sizeof(wrapped);
	int ret = KMS_ERR_HSM;
	CK_RV rv;

	if (keks_current(s) != KMS_OK)
		return KMS_ERR_HSM;
	rv = P11(s, C_CreateObject, s->h, tmpl, ARRAY_SIZE(tmpl), &tmp);
	if (rv != CKR_OK) {
		log_ckr("C_CreateObject (key to wrap)", rv);
		goto out;
	}
	rv = P11(s, C_WrapKey, s->h, &mech, s->kek, tmp, wrapped, &wrapped_len);
	if (rv != CKR_OK) {
		log_ckr("C_WrapKey", rv);
		goto out;
	}
	if (wrapped_len != KMS_HSM_BLOB_LEN) {
		KMS_ERR("hsm: C_WrapKey gave %lu bytes, expected %d",
			(unsigned long)wrapped_len, KMS_HSM_BLOB_LEN);
		goto out;
	}
	ret = KMS_OK;
out:
	/* The key must not outlive this call inside the token either. */
	if (destroy_tmp(s, tmp) != KMS_OK)
		ret = KMS_ERR_HSM;
	if (ret == KMS_OK)
		memcpy(blob, wrapped, sizeof(wrapped));
	return ret;
}

int kms_hsm_wrap(struct kms_hsm_session *s, const uint8_t key[KMS_HSM_KEY_LEN],
		 uint8_t blob[KMS_HSM_BLOB_LEN])
{
	int ret;

	pthread_rwlock_rdlock(&s->hsm->kek_rw);
	ret = wrap_unlocked(s, key, blob);
	pthread_rwlock_unlock(&s->hsm->kek_rw);
	return ret;
}

/* C_UnwrapKey of a blob under the KEK with template @p tmpl; on failure
 * *obj is CK_INVALID_HANDLE (never trust what a failed call wrote). */
static CK_RV unwrap_with(struct kms_hsm_session *s, CK_OBJECT_HANDLE kek,
			 const uint8_t *blob, CK_ATTRIBUTE *tmpl, CK_ULONG n,
			 CK_OBJECT_HANDLE *obj)
{
	CK_MECHANISM mech = { CKM_AES_KEY_WRAP, NULL, 0 };
	CK_RV rv = P11(s, C_UnwrapKey, s->h, &mech, kek, (CK_BYTE_PTR)blob,
		       KMS_HSM_BLOB_LEN, tmpl, n, obj);

	if (rv != CKR_OK)
		*obj = CK_INVALID_HANDLE;
	return rv;
}

/* During a KEK rotation a blob is under the next KEK or the previous one:
 * the RFC 3394 integrity check tells which. */
static CK_RV unwrap_obj(struct kms_hsm_session *s, const uint8_t *blob,
			CK_ATTRIBUTE *tmpl, CK_ULONG n, CK_OBJECT_HANDLE *obj)
{
	CK_RV rv;

	if (keks_current(s) != KMS_OK) {
		*obj = CK_INVALID_HANDLE;
		return CKR_DEVICE_ERROR;
	}
	rv = unwrap_with(s, s->kek, blob, tmpl, n, obj);
	if (rv != CKR_OK && s->kek_alt != CK_INVALID_HANDLE)
		rv = unwrap_with(s, s->kek_alt, blob, tmpl, n, obj);
	return rv;
}

/*
 * C_UnwrapKey into a temporary session object, read CKA_VALUE into @key,
 * destroy the object. A C_UnwrapKey failure is left in *unwrap_rv, unlogged,
 * for the caller to classify; any later failure is logged here.
 */
static int unwrap_raw(struct kms_hsm_session *s, const uint8_t *blob,
		      uint8_t key[KMS_HSM_KEY_LEN], CK_RV *unwrap_rv)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE type = CKK_AES;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	/*
	 * No CKA_VALUE_LEN: PKCS#11 forbids it in a C_UnwrapKey template for
	 * AES keys (SoftHSM2 answers CKR_ATTRIBUTE_READ_ONLY). The length is
	 * checked on the CKA_VALUE read back instead.
	 */
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_KEY_TYPE, &type, sizeof(type) },
		{ CKA_TOKEN, &no, sizeof(no) },
		{ CKA_SENSITIVE, &no, sizeof(no) },
		{ CKA_EXTRACTABLE, &yes, sizeof(yes) },
	};
	CK_OBJECT_HANDLE tmp = CK_INVALID_HANDLE;
	CK_ATTRIBUTE value = { CKA_VALUE, key, KMS_HSM_KEY_LEN };
	int ret = KMS_ERR_HSM;
	CK_RV rv;

	rv = unwrap_obj(s, blob, tmpl, ARRAY_SIZE(tmpl), &tmp);
	*unwrap_rv = rv;
	if (rv != CKR_OK)
		goto out;
	rv = P11(s, C_GetAttributeValue, s->h, tmp, &value, 1);
	if (rv != CKR_OK) {
		log_ckr("C_GetAttributeValue(CKA_VALUE)", rv);
		goto out;
	}
	if (value.ulValueLen != KMS_HSM_KEY_LEN) {
		KMS_ERR("hsm: unwrapped key is %lu bytes, expected %d",
			(unsigned long)value.ulValueLen, KMS_HSM_KEY_LEN);
		goto out;
	}
	ret = KMS_OK;
out:
	if (destroy_tmp(s, tmp) != KMS_OK)
		ret = KMS_ERR_HSM;
	return ret;
}

/* Codes PKCS#11 gives for a blob failing the RFC 3394 integrity check. */
static bool is_integrity_failure(CK_RV rv)
{
	switch (rv) {
	case CKR_WRAPPED_KEY_INVALID:
	case CKR_WRAPPED_KEY_LEN_RANGE:
	case CKR_ENCRYPTED_DATA_INVALID:
	case CKR_ENCRYPTED_DATA_LEN_RANGE:
		return true;
	}
	return false;
}

/*
 * Some modules report a blob that fails the integrity check with a generic
 * code (SoftHSM2 2.6 says CKR_GENERAL_ERROR), which a failing HSM could
 * also give. Tell the two apart by a round trip of a throwaway, non-secret
 * value through the same KEK and session: if that works, the HSM is fine
 * and the blob is what was rejected. Only runs on the failure path.
 */
static bool kek_round_trip_works(struct kms_hsm_session *s)
{
	uint8_t probe[KMS_HSM_KEY_LEN], back[KMS_HSM_KEY_LEN];
	uint8_t blob[KMS_HSM_BLOB_LEN];
	CK_RV rv = CKR_OK;
	bool ok;

	memset(probe, 0xa5, sizeof(probe));
	ok = kms_hsm_wrap(s, probe, blob) == KMS_OK &&
	     unwrap_raw(s, blob, back, &rv) == KMS_OK &&
	     memcmp(back, probe, sizeof(back)) == 0;
	if (rv != CKR_OK)
		log_ckr("C_UnwrapKey (health probe)", rv);
	return ok;
}

/* After a failed C_UnwrapKey: a bad blob (KMS_ERR_AUTH) or a failing HSM. */
static int unwrap_failure(struct kms_hsm_session *s, CK_RV rv)
{
	if (is_integrity_failure(rv) ||
	    ((rv == CKR_GENERAL_ERROR || rv == CKR_FUNCTION_FAILED) &&
	     kek_round_trip_works(s))) {
		KMS_WARN_RL("hsm: C_UnwrapKey: blob fails the integrity check "
			    "(%s): wrong KEK or corrupted", ckr_name(rv));
		return KMS_ERR_AUTH;
	}
	log_ckr("C_UnwrapKey", rv);
	return KMS_ERR_HSM;
}

static int unwrap_unlocked(struct kms_hsm_session *s,
		   const uint8_t blob[KMS_HSM_BLOB_LEN],
		   uint8_t key_out[KMS_HSM_KEY_LEN])
{
	uint8_t key[KMS_HSM_KEY_LEN];
	CK_RV rv = CKR_OK;
	int ret;

	ret = unwrap_raw(s, blob, key, &rv);
	if (ret == KMS_OK)
		memcpy(key_out, key, sizeof(key));
	else if (rv != CKR_OK)	/* else C_UnwrapKey worked, a later step failed */
		ret = unwrap_failure(s, rv);
	explicit_bzero(key, sizeof(key));
	return ret;
}

int kms_hsm_unwrap(struct kms_hsm_session *s,
		   const uint8_t blob[KMS_HSM_BLOB_LEN],
		   uint8_t key_out[KMS_HSM_KEY_LEN])
{
	int ret;

	pthread_rwlock_rdlock(&s->hsm->kek_rw);
	ret = unwrap_unlocked(s, blob, key_out);
	pthread_rwlock_unlock(&s->hsm->kek_rw);
	return ret;
}

static int rewrap_unlocked(struct kms_hsm_session *s,
		   const uint8_t blob[KMS_HSM_BLOB_LEN],
		   uint8_t out[KMS_HSM_BLOB_LEN])
{
	CK_MECHANISM mech = { CKM_AES_KEY_WRAP, NULL, 0 };
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE type = CKK_AES;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	/* Sensitive: its value is never readable; extractable only so that
	 * C_WrapKey can wrap it under the next KEK. */
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_KEY_TYPE, &type, sizeof(type) },
		{ CKA_TOKEN, &no, sizeof(no) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &yes, sizeof(yes) },
	};
	CK_OBJECT_HANDLE obj = CK_INVALID_HANDLE;
	uint8_t wrapped[KMS_HSM_BLOB_LEN];
	CK_ULONG wrapped_len = sizeof(wrapped);
	int ret = KMS_ERR_HSM;
	CK_RV rv;

	if (keks_current(s) != KMS_OK)
		return KMS_ERR_HSM;
	if (s->kek_alt == CK_INVALID_HANDLE)
		return KMS_ERR_INVAL; /* no rotation in progress */
	/* Already under the next KEK: nothing to do. */
	rv = unwrap_with(s, s->kek, blob, tmpl, ARRAY_SIZE(tmpl), &obj);
	if (rv == CKR_OK) {
		ret = destroy_tmp(s, obj);
		return ret == KMS_OK ? KMS_ERR_EXISTS : ret;
	}
	rv = unwrap_with(s, s->kek_alt, blob, tmpl, ARRAY_SIZE(tmpl), &obj);
	if (rv != CKR_OK)
		return unwrap_failure(s, rv);
	rv = P11(s, C_WrapKey, s->h, &mech, s->kek, obj, wrapped, &wrapped_len);
	if (rv != CKR_OK)
		log_ckr("C_WrapKey (rewrap)", rv);
	else if (wrapped_len == KMS_HSM_BLOB_LEN)
		ret = KMS_OK;
	if (destroy_tmp(s, obj) != KMS_OK)
		ret = KMS_ERR_HSM;
	if (ret == KMS_OK)
		memcpy(out, wrapped, sizeof(wrapped));
	return ret;
}

int kms_hsm_rewrap(struct kms_hsm_session *s,
		   const uint8_t blob[KMS_HSM_BLOB_LEN],
		   uint8_t out[KMS_HSM_BLOB_LEN])
{
	int ret;

	pthread_rwlock_rdlock(&s->hsm->kek_rw);
	ret = rewrap_unlocked(s, blob, out);
	pthread_rwlock_unlock(&s->hsm->kek_rw);
	return ret;
}

static int key_load_unlocked(struct kms_hsm_session *s,
		     const uint8_t blob[KMS_HSM_BLOB_LEN], kms_hsm_obj *out)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE type = CKK_AES;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	/* A session object the host can use but never read or export. */
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_KEY_TYPE, &type, sizeof(type) },
		{ CKA_TOKEN, &no, sizeof(no) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &no, sizeof(no) },
		{ CKA_ENCRYPT, &yes, sizeof(yes) },
		{ CKA_DECRYPT, &yes, sizeof(yes) },
		{ CKA_WRAP, &no, sizeof(no) },
		{ CKA_UNWRAP, &no, sizeof(no) },
	};
	CK_OBJECT_HANDLE obj = CK_INVALID_HANDLE;
	CK_RV rv;

	rv = unwrap_obj(s, blob, tmpl, ARRAY_SIZE(tmpl), &obj);
	if (rv != CKR_OK)
		return unwrap_failure(s, rv);
	*out = obj;
	return KMS_OK;
}

int kms_hsm_key_load(struct kms_hsm_session *s,
		     const uint8_t blob[KMS_HSM_BLOB_LEN], kms_hsm_obj *out)
{
	int ret;

	pthread_rwlock_rdlock(&s->hsm->kek_rw);
	ret = key_load_unlocked(s, blob, out);
	pthread_rwlock_unlock(&s->hsm->kek_rw);
	return ret;
}

int kms_hsm_key_unload(struct kms_hsm_session *s, kms_hsm_obj obj)
{
	return destroy_tmp(s, (CK_OBJECT_HANDLE)obj);
}

/* The largest plaintext the GCM calls take: tokens and keyboxes are small. */
#define GCM_MAX 512

static void gcm_params(CK_GCM_PARAMS *p, const uint8_t iv[12],
		       const uint8_t *ad, size_t ad_len)
{
	p->pIv = (CK_BYTE_PTR)iv;
	p->ulIvLen = 12;
	p->ulIvBits = 96;
	p->pAAD = (CK_BYTE_PTR)ad;
	p->ulAADLen = ad_len;
	p->ulTagBits = 128;
}

static int gcm_seal_unlocked(struct kms_hsm_session *s, kms_hsm_obj key,
		     const uint8_t iv[12], const uint8_t *ad, size_t ad_len,
		     const uint8_t *pt, size_t pt_len, uint8_t *ct,
		     uint8_t tag[16])
{
	CK_GCM_PARAMS gp;
	CK_MECHANISM mech = { CKM_AES_GCM, &gp, sizeof(gp) };
	uint8_t out[GCM_MAX + 16];
	CK_ULONG out_len = sizeof(out);
	CK_RV rv;

	if (pt_len > GCM_MAX)
		return KMS_ERR_INVAL;
	if (keks_current(s) != KMS_OK)
		return KMS_ERR_HSM;
	gcm_params(&gp, iv, ad, ad_len);
	rv = P11(s, C_EncryptInit, s->h, &mech, (CK_OBJECT_HANDLE)key);
	if (rv != CKR_OK) {
		log_ckr("C_EncryptInit(CKM_AES_GCM)", rv);
		return KMS_ERR_HSM;
	}
	/* C_Encrypt ends the operation whatever it returns (but for
	 * CKR_BUFFER_TOO_SMALL, which the buffer rules out). */
	rv = P11(s, C_Encrypt, s->h, (CK_BYTE_PTR)pt, pt_len, out, &out_len);
	if (rv != CKR_OK || out_len != pt_len + 16) {
		if (rv == CKR_OK)
			KMS_ERR("hsm: C_Encrypt(CKM_AES_GCM) gave %lu bytes, "
				"expected %zu", (unsigned long)out_len, pt_len + 16);
		else
			log_ckr("C_Encrypt(CKM_AES_GCM)", rv);
		explicit_bzero(out, sizeof(out));
		return KMS_ERR_HSM;
	}
	memcpy(ct, out, pt_len);
	memcpy(tag, out + pt_len, 16);
	return KMS_OK;
}

int kms_hsm_gcm_seal(struct kms_hsm_session *s, kms_hsm_obj key,
		     const uint8_t iv[12], const uint8_t *ad, size_t ad_len,
		     const uint8_t *pt, size_t pt_len, uint8_t *ct,
		     uint8_t tag[16])
{
	int ret;

	pthread_rwlock_rdlock(&s->hsm->kek_rw);
	ret = gcm_seal_unlocked(s, key, iv, ad, ad_len, pt, pt_len, ct, tag);
	pthread_rwlock_unlock(&s->hsm->kek_rw);
	return ret;
}

static int gcm_open_raw(struct kms_hsm_session *s, kms_hsm_obj key,
			const uint8_t iv[12], const uint8_t *ad, size_t ad_len,
			const uint8_t *ct, size_t ct_len, const uint8_t tag[16],
			uint8_t *pt, CK_RV *decrypt_rv);

/*
 * SoftHSM2 2.6 reports a GCM tag that does not verify as CKR_GENERAL_ERROR,
 * which a failing HSM could also give. As for unwrap, tell the two apart
 * by a round trip through the same key: a random value sealed under a
 * fresh random IV from the token (the probe's ciphertext never leaves this
 * function) and opened again. Only on the failure path: 5 calls.
 */
static bool gcm_round_trip_works(struct kms_hsm_session *s, kms_hsm_obj key)
{
	uint8_t iv[12], probe[16], ct[16], tag[16], back[16];
	CK_RV rv = CKR_OK;
	bool ok;

	ok = kms_hsm_random(s, iv, sizeof(iv)) == KMS_OK;
	memcpy(probe, iv, sizeof(iv));
	memset(probe + sizeof(iv), 0x5a, sizeof(probe) - sizeof(iv));
	ok = ok && kms_hsm_gcm_seal(s, key, iv, NULL, 0, probe, sizeof(probe),
				    ct, tag) == KMS_OK &&
	     gcm_open_raw(s, key, iv, NULL, 0, ct, sizeof(ct), tag, back,
			  &rv) == KMS_OK &&
	     memcmp(back, probe, sizeof(back)) == 0;
	explicit_bzero(back, sizeof(back));
	return ok;
}

static int gcm_open_unlocked(struct kms_hsm_session *s, kms_hsm_obj key,
		     const uint8_t iv[12], const uint8_t *ad, size_t ad_len,
		     const uint8_t *ct, size_t ct_len, const uint8_t tag[16],
		     uint8_t *pt)
{
	CK_RV rv = CKR_OK;
	int ret;

	if (keks_current(s) != KMS_OK)
		return KMS_ERR_HSM;
	ret = gcm_open_raw(s, key, iv, ad, ad_len, ct, ct_len, tag, pt, &rv);

	if (ret != KMS_ERR_HSM || rv == CKR_OK)
		return ret;
	if (rv == CKR_ENCRYPTED_DATA_INVALID || rv == CKR_ENCRYPTED_DATA_LEN_RANGE)
		return KMS_ERR_AUTH; /* the tag does not verify: not logged */
	if ((rv == CKR_GENERAL_ERROR || rv == CKR_FUNCTION_FAILED) &&
	    gcm_round_trip_works(s, key))
		return KMS_ERR_AUTH;
	log_ckr("C_Decrypt(CKM_AES_GCM)", rv);
	return KMS_ERR_HSM;
}

int kms_hsm_gcm_open(struct kms_hsm_session *s, kms_hsm_obj key,
		     const uint8_t iv[12], const uint8_t *ad, size_t ad_len,
		     const uint8_t *ct, size_t ct_len, const uint8_t tag[16],
		     uint8_t *pt)
{
	int ret;

	pthread_rwlock_rdlock(&s->hsm->kek_rw);
	ret = gcm_open_unlocked(s, key, iv, ad, ad_len, ct, ct_len, tag, pt);
	pthread_rwlock_unlock(&s->hsm->kek_rw);
	return ret;
}

/* C_DecryptInit + C_Decrypt; a C_Decrypt failure is left in *decrypt_rv,
 * unlogged, for the caller to classify. */
static int gcm_open_raw(struct kms_hsm_session *s, kms_hsm_obj key,
			const uint8_t iv[12], const uint8_t *ad, size_t ad_len,
			const uint8_t *ct, size_t ct_len, const uint8_t tag[16],
			uint8_t *pt, CK_RV *decrypt_rv)
{
	CK_GCM_PARAMS gp;
	CK_MECHANISM mech = { CKM_AES_GCM, &gp, sizeof(gp) };
	uint8_t in[GCM_MAX + 16], out[GCM_MAX + 16];
	CK_ULONG out_len = sizeof(out);
	int ret = KMS_OK;
	CK_RV rv;

	if (ct_len > GCM_MAX)
		return KMS_ERR_INVAL;
	memcpy(in, ct, ct_len);
	memcpy(in + ct_len, tag, 16);
	gcm_params(&gp, iv, ad, ad_len);
	rv = P11(s, C_DecryptInit, s->h, &mech, (CK_OBJECT_HANDLE)key);
	if (rv != CKR_OK) {
		log_ckr("C_DecryptInit(CKM_AES_GCM)", rv);
		return KMS_ERR_HSM;
	}
	rv = P11(s, C_Decrypt, s->h, in, ct_len + 16, out, &out_len);
	*decrypt_rv = rv;
	if (rv != CKR_OK) {
		ret = KMS_ERR_HSM;
	} else if (out_len != ct_len) {
		KMS_ERR("hsm: C_Decrypt(CKM_AES_GCM) gave %lu bytes, expected %zu",
			(unsigned long)out_len, ct_len);
		ret = KMS_ERR_HSM;
	} else {
		memcpy(pt, out, ct_len);
	}
	explicit_bzero(out, sizeof(out));
	return ret;
}

int kms_hsm_has_gcm(struct kms_hsm_session *s)
{
	CK_MECHANISM_INFO info;
	CK_RV rv = P11(s, C_GetMechanismInfo, s->hsm->slot, CKM_AES_GCM, &info);

	if (rv != CKR_OK) {
		log_ckr("C_GetMechanismInfo(CKM_AES_GCM)", rv);
		return 0;
	}
	return (info.flags & CKF_ENCRYPT) && (info.flags & CKF_DECRYPT) &&
	       info.ulMaxKeySize >= 32;
}

int kms_hsm_new_key(struct kms_hsm_session *s, uint8_t key_out[KMS_HSM_KEY_LEN],
		    uint8_t blob[KMS_HSM_BLOB_LEN])
{
	uint8_t key[KMS_HSM_KEY_LEN];
	int ret;

	ret = kms_hsm_random(s, key, sizeof(key));
	if (ret != KMS_OK)
		goto out;
	ret = kms_hsm_wrap(s, key, blob);
	if (ret != KMS_OK)
		goto out;
	memcpy(key_out, key, sizeof(key));
out:
	explicit_bzero(key, sizeof(key));
	return ret;
}

uint64_t kms_hsm_session_calls(const struct kms_hsm_session *s)
{
	return s ? s->calls : 0;
}
