// An RTSP server for the PlayerEndpoint tests (tests/mediaserver/test_player.py): producers
// publish with ANNOUNCE/RECORD on the first port, clients PLAY from the second; RTP over UDP
// from the given port up. Prints "ready" once it listens.
//   node rtsp_server.js PUBLISH_PORT CLIENT_PORT RTP_PORT_START
const RtspServer = require('rtsp-streaming-server').default;

const [serverPort, clientPort, rtpPortStart] = process.argv.slice(2).map(Number);
const server = new RtspServer({ serverPort, clientPort, rtpPortStart, rtpPortCount: 40 });
server.start().then(
  () => console.log('ready'),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
