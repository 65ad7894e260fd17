/* SPDX-License-Identifier: Apache-2.0 */
/*
 * grpcpoke - send one raw gRPC request to a unix socket and print the
 * outcome, for tests of `lazyimg snapshotter` with malformed or unusual
 * calls that no containerd client would make.
 *
 *   grpcpoke SOCKET METHOD HEX
 *
 * METHOD is a full path (/containerd.services.snapshots.v1.Snapshots/Stat),
 * HEX the request message bytes in hex ("" = empty message). Prints
 * "status <grpc code> messages <n> bytes <total>" and the status details on a
 * second line; exit 0 when the call completed (whatever its status), 1 when
 * it could not be made.
 */
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int unhex(const char *h, unsigned char **out, size_t *len)
{
	size_t n = strlen(h);
	unsigned char *b = malloc(n / 2 + 1);

	if (!b || n % 2)
		return -1;
	for (size_t i = 0; i < n / 2; i++) {
		unsigned v;

		if (sscanf(h + 2 * i, "%2x", &v) != 1)
			return -1;
		b[i] = (unsigned char)v;
	}
	*out = b;
	*len = n / 2;
	return 0;
}

static int wait_tag(grpc_completion_queue *cq, void *tag)
{
	gpr_timespec dl = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_seconds(20, GPR_TIMESPAN));
	grpc_event ev = grpc_completion_queue_next(cq, dl, NULL);

	return ev.type == GRPC_OP_COMPLETE && ev.tag == tag ? (ev.success ? 0 : 1) : -1;
}

int main(int argc, char **argv)
{
	grpc_channel_credentials *creds;
	grpc_completion_queue *cq;
	grpc_channel *ch;
	grpc_call *call;
	grpc_metadata_array md_init, md_trail;
	grpc_status_code status = GRPC_STATUS_UNKNOWN;
	grpc_slice details, method, body;
	grpc_byte_buffer *req, *resp = NULL;
	grpc_op ops[6];
	unsigned char *raw;
	size_t len, total = 0;
	int nmsg = 0, tag1, tag2, tag3;
	char target[512];

	if (argc != 4 || unhex(argv[3], &raw, &len)) {
		fprintf(stderr, "usage: grpcpoke SOCKET METHOD HEX\n");
		return 1;
	}
	grpc_init();
	snprintf(target, sizeof(target), "unix:%s", argv[1]);
	creds = grpc_insecure_credentials_create();
	ch = grpc_channel_create(target, creds, NULL);
	grpc_channel_credentials_release(creds);
	cq = grpc_completion_queue_create_for_next(NULL);
	method = grpc_slice_from_copied_string(argv[2]);
	call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method, NULL,
					gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_seconds(20, GPR_TIMESPAN)),
					NULL);
	body = grpc_slice_from_copied_buffer((const char *)raw, len);
	req = grpc_raw_byte_buffer_create(&body, 1);
	grpc_metadata_array_init(&md_init);
	grpc_metadata_array_init(&md_trail);
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = req;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &md_init;
	if (grpc_call_start_batch(call, ops, 4, &tag1, NULL) != GRPC_CALL_OK || wait_tag(cq, &tag1) < 0) {
		fprintf(stderr, "grpcpoke: cannot send the request\n");
		return 1;
	}
	/* read every message of a (possibly streaming) answer */
	for (;;) {
		memset(ops, 0, sizeof(ops));
		ops[0].op = GRPC_OP_RECV_MESSAGE;
		ops[0].data.recv_message.recv_message = &resp;
		if (grpc_call_start_batch(call, ops, 1, &tag2, NULL) != GRPC_CALL_OK || wait_tag(cq, &tag2) < 0)
			break;
		if (!resp)
			break;
		nmsg++;
		total += grpc_byte_buffer_length(resp);
		grpc_byte_buffer_destroy(resp);
		resp = NULL;
	}
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[0].data.recv_status_on_client.trailing_metadata = &md_trail;
	ops[0].data.recv_status_on_client.status = &status;
	ops[0].data.recv_status_on_client.status_details = &details;
	if (grpc_call_start_batch(call, ops, 1, &tag3, NULL) != GRPC_CALL_OK || wait_tag(cq, &tag3) < 0) {
		fprintf(stderr, "grpcpoke: no status\n");
		return 1;
	}
	printf("status %d messages %d bytes %zu\n", (int)status, nmsg, total);
	{
		char *d = grpc_slice_to_c_string(details);

		printf("%s\n", d);
		gpr_free(d);
	}
	grpc_slice_unref(details);
	grpc_slice_unref(method);
	grpc_slice_unref(body);
	grpc_byte_buffer_destroy(req);
	grpc_metadata_array_destroy(&md_init);
	grpc_metadata_array_destroy(&md_trail);
	grpc_call_unref(call);
	grpc_channel_destroy(ch);
	grpc_completion_queue_shutdown(cq);
	while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(cq);
	free(raw);
	grpc_shutdown();
	return 0;
}
