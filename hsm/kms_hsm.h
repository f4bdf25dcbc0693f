/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kms_hsm.h
 * @brief The only door to the HSM: PKCS#11 v2.40 through a dlopen()ed module.
 *
 * Nothing here assumes SoftHSM2: the module path, token label, PIN source
 * and KEK label come from the configuration. Calls made here:
 * C_GetFunctionList, C_Initialize (CKF_OS_LOCKING_OK), C_GetSlotList,
 * C_GetTokenInfo, C_OpenSession, C_Login, C_GenerateRandom, C_GenerateKey,
 * C_FindObjects*, C_CreateObject, C_WrapKey, C_UnwrapKey,
 * C_GetAttributeValue, C_DestroyObject, C_CloseSession, C_Finalize, and for
 * crypto_mode = hsm C_GetMechanismInfo, C_EncryptInit, C_Encrypt,
 * C_DecryptInit, C_Decrypt.
 *
 * Key hierarchy: one KEK per store, an AES-256 token object (CKA_TOKEN,
 * CKA_SENSITIVE, !CKA_EXTRACTABLE, CKA_WRAP, CKA_UNWRAP) found by CKA_LABEL.
 * Every party key and every K is kept outside the HSM only as a blob:
 * CKM_AES_KEY_WRAP (RFC 3394) of the 32-byte key under the KEK, 40 bytes.
 *
 * Threads: a kms_hsm is shared; each thread opens its own kms_hsm_session
 * once at start and keeps it (SoftHSM2 can invalidate other threads'
 * sessions when sessions are opened and closed concurrently, so sessions
 * are long-lived). A session is used by one thread at a time.
 */
#ifndef KMS_HSM_H
#define KMS_HSM_H

#include <stddef.h>
#include <stdint.h>

#define KMS_HSM_KEY_LEN 32
#define KMS_HSM_BLOB_LEN 40   /* RFC 3394 wrap of a 32-byte key */

struct kms_hsm;          /* module + slot + login state; shared */
struct kms_hsm_session;  /* one per thread */

struct kms_hsm_config {
	const char *module;      /**< path of the PKCS#11 module (.so) */
	const char *token_label; /**< CKA_LABEL of the token (its slot is found) */
	const char *kek_label;   /**< CKA_LABEL of the KEK object */
	const char *pin_file;    /**< file holding the user PIN, or NULL */
	const char *pin_env;     /**< environment variable name, or NULL:
	                              used when pin_file is NULL; default
	                              "KMS_PIN" when both are NULL */
};

/**
 * Load the module, C_Initialize, find the token by label, read the PIN
 * (file first, else environment; the PIN buffer is wiped after C_Login)
 * and log the user in on a first session kept for the lifetime of @p out.
 * Does not require the KEK to exist (kmsctl init creates it).
 * Several kms_hsm may be open on one module at once: C_Initialize and
 * C_Finalize are counted per module, and CKR_USER_ALREADY_LOGGED_IN (a
 * second kms_hsm on the same token) is accepted.
 * @return KMS_OK; KMS_ERR_INVAL (@p cfg or @p out NULL); KMS_ERR_CONFIG
 *         (module cannot be loaded, no such token, missing field);
 *         KMS_ERR_PIN (no PIN, unreadable or empty PIN file, or the token
 *         refused it); KMS_ERR_NOMEM; KMS_ERR_HSM.
 *         On error a message naming the cause has been logged.
 */
int kms_hsm_open(const struct kms_hsm_config *cfg, struct kms_hsm **out);

/** Close every session, C_Finalize, dlclose. NULL is a no-op. Call only
 *  after all sessions are closed. */
void kms_hsm_close(struct kms_hsm *hsm);

/**
 * Open a session for the calling thread and find the KEK in it (once: a
 * KEK destroyed and recreated later needs a new session). Sessions are
 * opened and closed under the kms_hsm's lock. On error nothing is left
 * allocated or open.
 * @return KMS_OK, KMS_ERR_NOTFOUND (no KEK with that label: run
 *         `kmsctl init`), KMS_ERR_INVAL, KMS_ERR_NOMEM, KMS_ERR_HSM.
 */
int kms_hsm_session_open(struct kms_hsm *hsm, struct kms_hsm_session **out);

/** C_CloseSession and free. NULL is a no-op. */
void kms_hsm_session_close(struct kms_hsm_session *s);

/**
 * Create the KEK (C_GenerateKey CKM_AES_KEY_GEN, 32 bytes) as a token
 * object with the attributes named in the file comment plus CKA_PRIVATE
 * and !CKA_ENCRYPT/!CKA_DECRYPT. Runs on the kms_hsm's own login session
 * under its lock, so no session is opened or closed (used by `kmsctl init`,
 * before any worker runs; the label check and the creation are not atomic
 * against another process).
 * @return KMS_OK, KMS_ERR_EXISTS (a secret key with that label exists),
 *         KMS_ERR_HSM.
 */
int kms_hsm_kek_create(struct kms_hsm *hsm);

/*
 * KEK rotation. A rotation creates a second KEK, labelled "<kek_label>.next";
 * from then on every session wraps new blobs under it and unwraps a blob
 * under whichever of the two KEKs its RFC 3394 integrity check accepts.
 * Each stored blob is then re-wrapped (kms_hsm_rewrap, inside the HSM: the
 * key never reaches host memory). kms_hsm_kek_finish destroys the old KEK
 * and gives the new one the old label. Sessions notice each step through
 * an epoch counter and look their KEKs up again (one C_FindObjects).
 * control/kms_kekrot.h drives the whole rotation.
 */

/** How many KEKs are labelled kek_label (@p current) and
 *  "<kek_label>.next" (@p next). @return KMS_OK or KMS_ERR_HSM. */
int kms_hsm_kek_state(struct kms_hsm *hsm, unsigned *current, unsigned *next);

/** Start a rotation: create the next KEK (KMS_ERR_EXISTS: it exists, a
 *  rotation is resumed). Either way sessions wrap under it from now on. */
int kms_hsm_kek_next_create(struct kms_hsm *hsm);

/**
 * Re-wrap @p blob under the next KEK into @p out.
 * @return KMS_OK; KMS_ERR_EXISTS if @p blob is already under the next KEK
 *         (@p out untouched); KMS_ERR_AUTH if it opens under neither;
 *         KMS_ERR_INVAL if no rotation is in progress; KMS_ERR_HSM.
 */
int kms_hsm_rewrap(struct kms_hsm_session *s,
		   const uint8_t blob[KMS_HSM_BLOB_LEN],
		   uint8_t out[KMS_HSM_BLOB_LEN]);

/** End a rotation: destroy the old KEK, relabel the next one kek_label.
 *  Only once no stored blob is under the old KEK. @return KMS_OK,
 *  KMS_ERR_NOTFOUND (no KEK at all), KMS_ERR_HSM. */
int kms_hsm_kek_finish(struct kms_hsm *hsm);

/** The KEK epoch (changes at each rotation step): pre-made blobs of
 *  another epoch may be under a KEK that is going away. */
uint32_t kms_hsm_kek_epoch(const struct kms_hsm_session *s);

/**
 * A session the module reports lost (CKR_SESSION_HANDLE_INVALID,
 * CKR_SESSION_CLOSED, CKR_DEVICE_ERROR, CKR_DEVICE_REMOVED,
 * CKR_TOKEN_NOT_PRESENT) fails that call with KMS_ERR_HSM and is reopened
 * before its next use (then every object handle it made is dead); while
 * the HSM stays away each use fails KMS_ERR_HSM again. The generation
 * counts the reopenings: a cached object handle of another generation
 * must be made again.
 */
uint32_t kms_hsm_session_generation(const struct kms_hsm_session *s);

/** Reopen @p s now if it was lost (before trusting its generation).
 *  @return KMS_OK or KMS_ERR_HSM (the HSM is still away). */
int kms_hsm_session_ready(struct kms_hsm_session *s);

/** Fill @p buf with @p len bytes from C_GenerateRandom.
 *  @return KMS_OK or KMS_ERR_HSM. */
int kms_hsm_random(struct kms_hsm_session *s, uint8_t *buf, size_t len);

/**
 * Wrap a 32-byte key held in host memory under the KEK: a temporary
 * session object (CKA_TOKEN=false, extractable) is created, wrapped with
 * CKM_AES_KEY_WRAP and destroyed on every path. RFC 3394 is deterministic:
 * one key under one KEK always gives the same blob.
 * @return KMS_OK (blob written), KMS_ERR_HSM (blob untouched).
 */
int kms_hsm_wrap(struct kms_hsm_session *s, const uint8_t key[KMS_HSM_KEY_LEN],
		 uint8_t blob[KMS_HSM_BLOB_LEN]);

/**
 * Unwrap a blob into host memory (offload mode): C_UnwrapKey into a
 * temporary extractable session object, C_GetAttributeValue(CKA_VALUE),
 * C_DestroyObject. @p key_out should be locked memory (kms_secmem); it is
 * written only on KMS_OK.
 * A module may report the integrity failure with a generic code
 * (SoftHSM2: CKR_GENERAL_ERROR); then a round trip of a throwaway value
 * through the KEK (6 more calls, failure path only) tells a bad blob
 * (KMS_ERR_AUTH) from a failing HSM (KMS_ERR_HSM).
 * @return KMS_OK; KMS_ERR_AUTH when the blob fails the RFC 3394 integrity
 *         check (wrong KEK or corrupted), KMS_ERR_HSM otherwise.
 */
int kms_hsm_unwrap(struct kms_hsm_session *s,
		   const uint8_t blob[KMS_HSM_BLOB_LEN],
		   uint8_t key_out[KMS_HSM_KEY_LEN]);

/**
 * Generate a fresh key with the HSM's RNG and return both the key (host
 * memory) and its blob: C_GenerateRandom + kms_hsm_wrap(). Outputs are
 * written only on KMS_OK.
 * @return KMS_OK or KMS_ERR_HSM.
 */
int kms_hsm_new_key(struct kms_hsm_session *s, uint8_t key_out[KMS_HSM_KEY_LEN],
		    uint8_t blob[KMS_HSM_BLOB_LEN]);

/** A session object's handle (CK_OBJECT_HANDLE). */
typedef uint64_t kms_hsm_obj;

/**
 * Unwrap a blob into a session object the host can encrypt and decrypt
 * with but never read or export (crypto_mode = hsm): CKA_TOKEN=false,
 * CKA_PRIVATE, CKA_SENSITIVE, !CKA_EXTRACTABLE, CKA_ENCRYPT, CKA_DECRYPT,
 * !CKA_WRAP, !CKA_UNWRAP. One C_UnwrapKey; CKA_VALUE is never read. The
 * object lives until kms_hsm_key_unload or the session closes.
 * @return KMS_OK, KMS_ERR_AUTH (the blob fails the integrity check),
 *         KMS_ERR_HSM.
 */
int kms_hsm_key_load(struct kms_hsm_session *s,
		     const uint8_t blob[KMS_HSM_BLOB_LEN], kms_hsm_obj *out);

/** C_DestroyObject. @return KMS_OK or KMS_ERR_HSM. */
int kms_hsm_key_unload(struct kms_hsm_session *s, kms_hsm_obj obj);

/**
 * AES-256-GCM inside the HSM (CKM_AES_GCM, 96-bit IV, 128-bit tag):
 * C_EncryptInit + C_Encrypt. @p pt_len <= 512.
 * @return KMS_OK, KMS_ERR_INVAL (too long), KMS_ERR_HSM.
 */
int kms_hsm_gcm_seal(struct kms_hsm_session *s, kms_hsm_obj key,
		     const uint8_t iv[12], const uint8_t *ad, size_t ad_len,
		     const uint8_t *pt, size_t pt_len, uint8_t *ct,
		     uint8_t tag[16]);

/**
 * C_DecryptInit + C_Decrypt of ct||tag. @p pt is written only on KMS_OK.
 * @return KMS_OK, KMS_ERR_AUTH (the tag does not verify:
 *         CKR_ENCRYPTED_DATA_INVALID or _LEN_RANGE), KMS_ERR_INVAL,
 *         KMS_ERR_HSM.
 */
int kms_hsm_gcm_open(struct kms_hsm_session *s, kms_hsm_obj key,
		     const uint8_t iv[12], const uint8_t *ad, size_t ad_len,
		     const uint8_t *ct, size_t ct_len, const uint8_t tag[16],
		     uint8_t *pt);

/** @return 1 if the token's CKM_AES_GCM encrypts and decrypts with
 *  256-bit keys (C_GetMechanismInfo), else 0 (logged). */
int kms_hsm_has_gcm(struct kms_hsm_session *s);

/** Number of PKCS#11 calls made on this session so far (for stats); read
 *  it from the session's own thread. NULL gives 0. */
uint64_t kms_hsm_session_calls(const struct kms_hsm_session *s);

#endif /* KMS_HSM_H */
