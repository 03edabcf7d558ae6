package bench

import (
	"reflect"
	"testing"
)

func TestDecodeResponse(t *testing.T) {
	body := `<?xml version='1.0'?>
<methodResponse><params><param><value><array><data>
<value><struct>
<member><name>name</name><value><string>w0</string></value></member>
<member><name>pid</name><value><int>4242</int></value></member>
<member><name>statename</name><value><string>RUNNING</string></value></member>
<member><name>group</name><value>w0</value></member>
</struct></value>
<value><boolean>1</boolean></value>
</data></array></value></param></params></methodResponse>`
	got, err := decodeResponse([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	want := []any{map[string]any{"name": "w0", "pid": 4242, "statename": "RUNNING", "group": "w0"}, true}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v", got)
	}
	fault := `<?xml version='1.0'?><methodResponse><fault><value><struct>
<member><name>faultCode</name><value><int>10</int></value></member>
<member><name>faultString</name><value><string>BAD_NAME: x</string></value></member>
</struct></value></fault></methodResponse>`
	if _, err := decodeResponse([]byte(fault)); err == nil {
		t.Fatal("a fault must be an error")
	}
}
