// protobufjs has no ES module build; its UMD script (loaded first by index.html) sets globalThis.protobuf.
export default globalThis.protobuf;
