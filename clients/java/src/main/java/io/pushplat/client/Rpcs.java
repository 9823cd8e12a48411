package io.pushplat.client;

import com.google.protobuf.Descriptors;
import com.google.protobuf.Message;
import io.grpc.MethodDescriptor;
import io.grpc.protobuf.ProtoUtils;
import io.pushplat.v1.ClientFrame;
import io.pushplat.v1.EdgeProto;
import io.pushplat.v1.GetPresenceRequest;
import io.pushplat.v1.GetPresenceResponse;
import io.pushplat.v1.GetStatusRequest;
import io.pushplat.v1.GetStatusResponse;
import io.pushplat.v1.GetSubscriptionsRequest;
import io.pushplat.v1.GetSubscriptionsResponse;
import io.pushplat.v1.PushProto;
import io.pushplat.v1.SendBatchRequest;
import io.pushplat.v1.SendBatchResponse;
import io.pushplat.v1.SendRequest;
import io.pushplat.v1.SendResponse;
import io.pushplat.v1.ServerFrame;
import io.pushplat.v1.SubscribeRequest;
import io.pushplat.v1.SubscribeResponse;

/**
 * The gRPC methods this SDK calls, for use with {@code io.grpc.stub.ClientCalls} or a server's
 * {@code ServerServiceDefinition}.
 *
 * <p>protoc-gen-grpc-java is a native plugin that this project does not download, so these
 * descriptors are built here, from the services in the generated (committed, checked by
 * {@code scripts/gen-protos --check}) descriptors: the full name and the streaming kind come from
 * {@code protos/}, and a method renamed or retyped there fails this class's initialisation
 * instead of failing on the wire.
 */
public final class Rpcs {
  private Rpcs() {}

  /** {@code pushplat.v1.Edge/Connect}: the device's bidirectional stream. */
  public static final MethodDescriptor<ClientFrame, ServerFrame> EDGE_CONNECT =
      method(
          EdgeProto.getDescriptor(),
          "Edge",
          "Connect",
          ClientFrame.getDefaultInstance(),
          ServerFrame.getDefaultInstance());

  public static final MethodDescriptor<SendRequest, SendResponse> PUSH_SEND =
      method(
          PushProto.getDescriptor(),
          "Push",
          "Send",
          SendRequest.getDefaultInstance(),
          SendResponse.getDefaultInstance());

  public static final MethodDescriptor<SendBatchRequest, SendBatchResponse> PUSH_SEND_BATCH =
      method(
          PushProto.getDescriptor(),
          "Push",
          "SendBatch",
          SendBatchRequest.getDefaultInstance(),
          SendBatchResponse.getDefaultInstance());

  /** {@code pushplat.v1.Push/SendStream}: requests and their answers on one bidirectional stream. */
  public static final MethodDescriptor<SendRequest, SendResponse> PUSH_SEND_STREAM =
      method(
          PushProto.getDescriptor(),
          "Push",
          "SendStream",
          SendRequest.getDefaultInstance(),
          SendResponse.getDefaultInstance());

  public static final MethodDescriptor<GetStatusRequest, GetStatusResponse> PUSH_GET_STATUS =
      method(
          PushProto.getDescriptor(),
          "Push",
          "GetStatus",
          GetStatusRequest.getDefaultInstance(),
          GetStatusResponse.getDefaultInstance());

  public static final MethodDescriptor<GetPresenceRequest, GetPresenceResponse> PUSH_GET_PRESENCE =
      method(
          PushProto.getDescriptor(),
          "Push",
          "GetPresence",
          GetPresenceRequest.getDefaultInstance(),
          GetPresenceResponse.getDefaultInstance());

  public static final MethodDescriptor<SubscribeRequest, SubscribeResponse> PUSH_SUBSCRIBE =
      method(
          PushProto.getDescriptor(),
          "Push",
          "Subscribe",
          SubscribeRequest.getDefaultInstance(),
          SubscribeResponse.getDefaultInstance());

  public static final MethodDescriptor<SubscribeRequest, SubscribeResponse> PUSH_UNSUBSCRIBE =
      method(
          PushProto.getDescriptor(),
          "Push",
          "Unsubscribe",
          SubscribeRequest.getDefaultInstance(),
          SubscribeResponse.getDefaultInstance());

  public static final MethodDescriptor<GetSubscriptionsRequest, GetSubscriptionsResponse>
      PUSH_GET_SUBSCRIPTIONS =
          method(
              PushProto.getDescriptor(),
              "Push",
              "GetSubscriptions",
              GetSubscriptionsRequest.getDefaultInstance(),
              GetSubscriptionsResponse.getDefaultInstance());

  /** Builds a descriptor for {@code service/method} as declared in {@code file}. */
  static <Q extends Message, R extends Message> MethodDescriptor<Q, R> method(
      Descriptors.FileDescriptor file, String service, String name, Q request, R response) {
    Descriptors.ServiceDescriptor s = file.findServiceByName(service);
    if (s == null) {
      throw new IllegalStateException(file.getName() + " declares no service " + service);
    }
    Descriptors.MethodDescriptor m = s.findMethodByName(name);
    if (m == null) {
      throw new IllegalStateException(s.getFullName() + " declares no method " + name);
    }
    if (m.getInputType() != request.getDescriptorForType()
        || m.getOutputType() != response.getDescriptorForType()) {
      throw new IllegalStateException(
          m.getFullName()
              + " takes "
              + m.getInputType().getFullName()
              + " and returns "
              + m.getOutputType().getFullName()
              + ", not "
              + request.getDescriptorForType().getFullName()
              + " / "
              + response.getDescriptorForType().getFullName());
    }
    MethodDescriptor.MethodType type;
    if (m.isClientStreaming()) {
      type =
          m.isServerStreaming()
              ? MethodDescriptor.MethodType.BIDI_STREAMING
              : MethodDescriptor.MethodType.CLIENT_STREAMING;
    } else {
      type =
          m.isServerStreaming()
              ? MethodDescriptor.MethodType.SERVER_STREAMING
              : MethodDescriptor.MethodType.UNARY;
    }
    return MethodDescriptor.<Q, R>newBuilder()
        .setType(type)
        .setFullMethodName(MethodDescriptor.generateFullMethodName(s.getFullName(), m.getName()))
        .setRequestMarshaller(ProtoUtils.marshaller(request))
        .setResponseMarshaller(ProtoUtils.marshaller(response))
        .build();
  }
}
