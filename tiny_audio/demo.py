"""The web demo: `tiny-audio demo`, a Gradio page over the library (upload or record, options, transcript, timing).

from tiny_audio.demo import build_demo
build_demo(model).launch()
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .audio import AudioError, load_audio
from .transcribe import transcribe_arrays

SAMPLE = Path(__file__).parent / "samples" / "jfk.flac"


def transcribe_for_demo(
    model: Any,
    audio: Any,
    num_beams: int = 1,
    max_new_tokens: int = 0,
    chunk_length_s: float = 30.0,
    segment: str = "silence",
) -> tuple[str, str, list[list[Any]]]:
    """(transcript, timing line, segment rows) for one input; errors come back as the timing line, never raised."""
    if audio is None:
        return "", "Upload a file or record from the microphone first.", []
    try:
        array = load_audio(audio, target_rate=model.config.sample_rate)
    except AudioError as err:
        return "", f"Could not read the audio: {err}", []
    options: dict[str, Any] = {"num_beams": int(num_beams)}
    if max_new_tokens:
        options["max_new_tokens"] = int(max_new_tokens)
    start = time.perf_counter()
    [result] = transcribe_arrays(model, [array], chunk_length_s=float(chunk_length_s), segment=segment, **options)
    seconds = time.perf_counter() - start
    timing = (
        f"{result.duration:.1f} s of audio in {seconds:.2f} s (RTFx {result.duration / max(seconds, 1e-9):.1f}), "
        f"{len(result.segments)} segment{'s' if len(result.segments) != 1 else ''}"
    )
    rows = [[round(s.start, 2), round(s.end, 2), s.text] for s in result.segments]
    return result.text, timing, rows


def build_demo(model: Any, title: str = "Tiny Audio") -> Any:
    """The Gradio Blocks app for `model` (an ASRModel)."""
    import gradio as gr

    def run(audio: Any, num_beams: int, max_new_tokens: int, chunk_length_s: float, segment: str) -> tuple:
        return transcribe_for_demo(model, audio, num_beams, max_new_tokens, chunk_length_s, segment)

    with gr.Blocks(title=title) as demo:
        gr.Markdown(
            f"# {title}\nSpeech recognition with a pretrained audio encoder joined to a small LLM. "
            "Upload a file or record from the microphone."
        )
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Audio", elem_id="audio")
                with gr.Accordion("Generation options", open=False):
                    num_beams = gr.Slider(1, 8, value=1, step=1, label="Beams (1 = greedy)")
                    max_new_tokens = gr.Slider(0, 512, value=0, step=8, label="Most new tokens (0 = by audio length)")
                    chunk = gr.Slider(5, 30, value=float(model.config.chunk_length_s or 30), step=1, label="Window (s)")
                    segment = gr.Radio(["silence", "stride"], value="silence", label="Long audio: cut at")
                button = gr.Button("Transcribe", variant="primary", elem_id="transcribe")
            with gr.Column():
                text = gr.Textbox(label="Transcript", lines=6, elem_id="transcript")
                timing = gr.Markdown(elem_id="timing")
                segments = gr.Dataframe(headers=["start", "end", "text"], label="Segments", wrap=True)
        if SAMPLE.is_file():
            gr.Examples([[str(SAMPLE)]], inputs=[audio], label="Sample (JFK, public domain)")
        button.click(run, [audio, num_beams, max_new_tokens, chunk, segment], [text, timing, segments])
    return demo
