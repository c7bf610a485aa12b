"""OTLP/HTTP (protobuf) span receiver: POST /v1/traces on 4318; the
traces seen so far, with the services and span names in each, as JSON at
GET /api/traces on 16686."""
import json
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

traces = defaultdict(list)
lock = threading.Lock()


def service_name(resource):
    for attribute in resource.attributes:
        if attribute.key == "service.name":
            return attribute.value.string_value
    return "unknown"


class Collector(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with lock:
            for resource_spans in request.resource_spans:
                service = service_name(resource_spans.resource)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        traces[span.trace_id.hex()].append(
                            {"service": service, "name": span.name,
                             "span_id": span.span_id.hex(),
                             "parent_span_id": span.parent_span_id.hex()})
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


class Query(BaseHTTPRequestHandler):
    def do_GET(self):
        with lock:
            body = json.dumps({"data": [
                {"traceID": trace_id,
                 "services": sorted({s["service"] for s in spans}),
                 "spans": spans}
                for trace_id, spans in traces.items()]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


threading.Thread(target=ThreadingHTTPServer(("0.0.0.0", 4318), Collector).serve_forever,
                 daemon=True).start()
ThreadingHTTPServer(("0.0.0.0", 16686), Query).serve_forever()
