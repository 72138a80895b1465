package ingest

import (
	"encoding/json"
	"net/http"
	"time"
)

// Kinesis Data Firehose's HTTP endpoint delivery (AWS, "HTTP endpoint
// delivery request and response specifications", protocol version 1.0): a
// POST whose X-Amz-Firehose-Request-Id header names the request (the same on
// every retry), whose X-Amz-Firehose-Access-Key header carries the key
// configured on the stream, and whose JSON body is
// {"requestId": "...", "timestamp": <ms>, "records": [{"data": "<base64>"}]}
// (gzip'd as a whole when Content-Encoding: gzip). The endpoint must answer
// with Content-Type application/json and the body
// {"requestId": "<the header's value>", "timestamp": <ms>}, plus
// "errorMessage" when the status is not 200. Firehose retries every answer
// other than 200 until its retry duration runs out, then backs the records
// up to S3; it logs the status and errorMessage of each failure.
//
// The records themselves go through the decoder like any body: each data is
// a CloudWatch Logs subscription message (gzip'd, what a subscription filter
// to Firehose produces) or JSON lines of events (a direct PUT).

const (
	headerFirehoseRequestID = "X-Amz-Firehose-Request-Id"
	headerFirehoseProtocol  = "X-Amz-Firehose-Protocol-Version"
	headerFirehoseAccessKey = "X-Amz-Firehose-Access-Key"
)

// firehose is what a Firehose request says about itself.
type firehose struct {
	requestID string
	accessKey string
}

// firehoseRequest recognises a Firehose delivery by its headers; nil when
// it is not one.
func firehoseRequest(r *http.Request) *firehose {
	id := r.Header.Get(headerFirehoseRequestID)
	if id == "" && r.Header.Get(headerFirehoseProtocol) == "" {
		return nil
	}
	return &firehose{requestID: id, accessKey: r.Header.Get(headerFirehoseAccessKey)}
}

type firehoseReply struct {
	RequestID    string `json:"requestId"`
	Timestamp    int64  `json:"timestamp"`
	ErrorMessage string `json:"errorMessage,omitempty"`
}

// reply writes the protocol's answer: the status, and the JSON body naming
// the request; msg becomes errorMessage when the status is not 200.
func (f *firehose) reply(w http.ResponseWriter, code int, msg string) {
	rep := firehoseReply{RequestID: f.requestID, Timestamp: time.Now().UnixMilli()}
	if code != http.StatusOK {
		rep.ErrorMessage = msg
	}
	b, _ := json.Marshal(rep)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(b)
}
