//! The SIP message parser and stream framer on arbitrary bytes. Neither may
//! panic; a frame never claims more bytes than it was given; and nothing the
//! parser would echo into a response holds a control character (CR, LF, NUL
//! and the rest of C0 but HTAB), so no response can be split or cut short.

#![no_main]

use libfuzzer_sys::fuzz_target;
use poolgate::sip::message::{self, Frame, is_control};

fuzz_target!(|data: &[u8]| {
    match message::frame(data) {
        Ok(Frame::Keepalive(n) | Frame::Message(n)) => {
            assert!(
                n > 0 && n <= data.len(),
                "frame of {n} from {} bytes",
                data.len()
            );
        }
        Ok(Frame::Incomplete) | Err(_) => {}
    }
    let parsed = message::parse(data);
    let echo = &parsed.echo;
    for value in echo
        .vias
        .iter()
        .chain(&echo.from)
        .chain(&echo.to)
        .chain(&echo.call_id)
        .chain(&echo.cseq)
    {
        assert!(!value.bytes().any(is_control), "echoes {value:?}");
    }
    if let Ok(request) = &parsed.result {
        assert!(message::is_token(&request.method));
        assert!(!request.uri.bytes().any(|b| b <= b' '));
        assert!(request.body_len <= data.len());
    }
});
