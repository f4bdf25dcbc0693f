// SPDX-License-Identifier: Apache-2.0
/*
 * The control socket (control/ctl.c), server and client in one process:
 * the command table, arguments, refusals of malformed requests, the
 * socket's mode, a stale socket file replaced, a served path refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "kms_ctl.h"
#include "kms_err.h"

struct fx {
	char dir[64], path[96];
	struct kms_ctl *c;
	int calls;
};

/* "echo A B ...": {"args": [...]}; "fail": refused with a reason. */
static int echo(void *arg, int argc, char **argv, json_t *reply, char *err,
		size_t errlen)
{
	struct fx *f = arg;
	json_t *a = json_array();

	f->calls++;
	if (!strcmp(argv[0], "fail")) {
		snprintf(err, errlen, "refused on purpose");
		json_decref(a);
		return -1;
	}
	for (int i = 1; i < argc; i++)
		json_array_append_new(a, json_string(argv[i]));
	return json_object_set_new(reply, "args", a);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct kms_ctl_cmd cmds[2] = {
		{ "echo", "ARGS...: echo them", 0, echo, NULL },
		{ "fail", "refuse", 1, echo, NULL },
	};

	if (!f)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/kms-ctl-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/ctl.sock", f->dir);
	cmds[0].arg = cmds[1].arg = f;
	if (kms_ctl_start(f->path, cmds, 2, &f->c))
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	kms_ctl_stop(f->c);
	rmdir(f->dir);
	free(f);
	return 0;
}

static json_t *call(struct fx *f, const char *line)
{
	char err[256];
	json_t *r = NULL;

	assert_int_equal(kms_ctl_call(f->path, line, &r, err, sizeof(err)), KMS_OK);
	return r;
}

static void commands_and_arguments(void **state)
{
	struct fx *f = *state;
	json_t *r = call(f, "echo one  two\tthree");
	struct stat st;

	assert_true(json_is_true(json_object_get(r, "ok")));
	assert_int_equal(json_array_size(json_object_get(r, "args")), 3);
	assert_string_equal(json_string_value(json_array_get(json_object_get(r, "args"), 2)),
			    "three");
	json_decref(r);
	r = call(f, "help");
	assert_int_equal(json_array_size(json_object_get(r, "commands")), 3);
	json_decref(r);
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_true(S_ISSOCK(st.st_mode));
}

static void refusals(void **state)
{
	struct fx *f = *state;
	static const struct {
		const char *line, *error;
	} bad[] = {
		{ "nope", "unknown command 'nope'" },
		{ "", "empty request" },
		{ "fail", "refused on purpose" },
		{ "echo 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17", "more than 16" },
		/* Not UTF-8 (found by fuzz_ctl: jansson would refuse to quote
		 * it and no answer would leave), a control byte, Latin-1. */
		{ "\x91", "not printable ASCII" },
		{ "echo a\x01b", "not printable ASCII" },
		{ "echo caf\xe9", "not printable ASCII" },
	};
	char big[KMS_CTL_LINE_MAX + 100];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_t *r = call(f, bad[i].line);

		assert_true(json_is_false(json_object_get(r, "ok")));
		assert_non_null(strstr(json_string_value(json_object_get(r, "error")),
				       bad[i].error));
		json_decref(r);
	}
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	{
		json_t *r = call(f, big);

		assert_non_null(strstr(json_string_value(json_object_get(r, "error")),
				       "longer than"));
		json_decref(r);
	}
	/* Only "fail" reached a handler; 16 arguments still do. */
	assert_int_equal(f->calls, 1);
	json_decref(call(f, "echo 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16"));
	assert_int_equal(f->calls, 2);
}

/* A served path is refused; once stopped, the file is gone; a stale file
 * (bound, nobody listening) is replaced. */
static void served_and_stale(void **state)
{
	struct fx *f = *state;
	struct kms_ctl_cmd none[1] = { { "x", "", 0, echo, f } };
	struct kms_ctl *c2 = NULL;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char err[256];
	json_t *r;
	int fd;

	assert_int_equal(kms_ctl_start(f->path, none, 1, &c2), KMS_ERR_EXISTS);
	kms_ctl_stop(f->c);
	f->c = NULL;
	assert_int_not_equal(access(f->path, F_OK), 0);
	assert_int_equal(kms_ctl_call(f->path, "help", &r, err, sizeof(err)),
			 KMS_ERR_IO);
	assert_non_null(strstr(err, "cannot reach kmsd"));
	/* A stale socket file left by a killed kmsd. */
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	memcpy(sa.sun_path, f->path, strlen(f->path) + 1);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	assert_int_equal(access(f->path, F_OK), 0);
	assert_int_equal(kms_ctl_start(f->path, none, 1, &f->c), KMS_OK);
	r = call(f, "help");
	assert_true(json_is_true(json_object_get(r, "ok")));
	json_decref(r);
}

static void path_too_long(void **state)
{
	char path[200];
	struct kms_ctl *c = NULL;

	(void)state;
	memset(path, 'p', sizeof(path) - 1);
	path[0] = '/';
	path[sizeof(path) - 1] = '\0';
	assert_int_equal(kms_ctl_start(path, NULL, 0, &c), KMS_ERR_INVAL);
	assert_null(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(commands_and_arguments, setup, teardown),
		cmocka_unit_test_setup_teardown(refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(served_and_stale, setup, teardown),
		cmocka_unit_test(path_too_long),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
