"""Our CLIP towers equal Hugging Face CLIPModel on a small random checkpoint saved to disk."""
import pytest
import torch
import torch.nn.functional as F

import eclipse_lite as el
from eclipse_lite.clip import resize_image_positions, resize_text_positions

transformers = pytest.importorskip("transformers")


def small_hf_clip(image_size=32, patch=8, max_pos=77):
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig
    text = CLIPTextConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=max_pos, vocab_size=49408)
    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                              num_attention_heads=2, image_size=image_size, patch_size=patch)
    cfg = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=32)
    torch.manual_seed(1)
    model = CLIPModel(cfg).eval()
    with torch.no_grad():  # make LayerNorms and biases non-trivial so the mapping is really tested
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "layrnorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def features(out):
    return out if torch.is_tensor(out) else out.pooler_output


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf_clip")
    small_hf_clip().save_pretrained(path)
    return path


def test_text_and_image_features_equal_transformers(hf_dir):
    from transformers import CLIPModel
    hf = CLIPModel.from_pretrained(hf_dir, attn_implementation="eager").eval()
    ours = el.ECLIPSE.from_clip(hf_dir, num_frames=4, audio_dim=16).eval()
    assert ours.config.context_length == 64 and ours.config.image_size == 32
    texts = ["a dog barking loudly", "First a cow moos off screen, then a red square slides in.",
             "", "a" + " very" * 80 + " long caption"]
    ids, mask = el.tokenize(texts, context_length=64)
    with torch.no_grad():
        expected = F.normalize(features(hf.get_text_features(input_ids=ids, attention_mask=mask)), dim=-1)
        torch.testing.assert_close(ours.encode_text(ids, mask), expected, atol=1e-5, rtol=1e-5)
        images = torch.randn(6, 3, 32, 32)
        expected = F.normalize(features(hf.get_image_features(pixel_values=images)), dim=-1)
        got = F.normalize(ours.visual(images), dim=-1)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        # at initialisation ECLIPSE's video embedding is the mean of CLIP's image features
        frames = images.view(2, 3, 3, 32, 32)
        audio = torch.randn(2, 3, 16)
        video = ours.encode_video(frames, audio)
        mean = F.normalize(expected.view(2, 3, -1).mean(1), dim=-1)
        torch.testing.assert_close(video, mean, atol=1e-5, rtol=1e-5)


def test_av_blocks_are_cloned_from_loaded_layers(hf_dir):
    ours = el.ECLIPSE.from_clip(hf_dir, num_frames=4, audio_dim=16)
    for i, block in ours.av_blocks.items():
        layer = ours.visual.blocks[int(i)]
        for attn in (block.a2v_attn, block.v2a_attn):
            torch.testing.assert_close(attn.q_proj.weight, layer.attn.q_proj.weight)
            torch.testing.assert_close(attn.out_proj.bias, layer.attn.out_proj.bias)
        torch.testing.assert_close(block.norm_audio.weight, layer.ln_1.weight)
        assert block.a2v_proj.weight.abs().sum() == 0 and block.v2a_proj.bias.abs().sum() == 0


def test_positional_embeddings_resized_for_other_sizes(hf_dir):
    model = el.ECLIPSE.from_clip(hf_dir, image_size=48, context_length=128, num_frames=2, audio_dim=16)
    assert model.visual.position_embedding.shape == (1 + 36, 64)
    assert model.text.position_embedding.shape == (128, 64)
    frames = torch.randn(1, 2, 3, 48, 48)
    ids, mask = el.tokenize(["a cat"], context_length=128)
    out = model(frames, torch.randn(1, 2, 16), ids, mask)
    assert torch.isfinite(out["loss"])


def test_resize_helpers():
    pos = torch.randn(17, 8)
    assert resize_image_positions(pos, 16) is pos
    big = resize_image_positions(pos, 64)
    torch.testing.assert_close(big[0], pos[0])
    assert big.shape == (65, 8)
    text = torch.randn(77, 8)
    torch.testing.assert_close(resize_text_positions(text, 64), text[:64])
    longer = resize_text_positions(text, 128)
    assert longer.shape == (128, 8)
    with pytest.raises(ValueError, match="square"):
        resize_image_positions(torch.randn(11, 8), 16)


def test_safetensors_and_bin_both_load(tmp_path):
    import shutil
    model = small_hf_clip()
    model.save_pretrained(tmp_path / "st")
    (tmp_path / "bin").mkdir()
    shutil.copy(tmp_path / "st" / "config.json", tmp_path / "bin" / "config.json")
    torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    a = el.ECLIPSE.from_clip(tmp_path / "st", audio_dim=16)
    b = el.ECLIPSE.from_clip(tmp_path / "bin", audio_dim=16)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        if not a.is_new_parameter(name):  # the audio projection is new, randomly initialised
            torch.testing.assert_close(pa, pb, msg=name)


def test_hub_id_offline_says_how_to_use_a_local_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        el.ECLIPSE.from_clip("openai/clip-vit-base-patch32")


def test_directory_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        el.ECLIPSE.from_clip(tmp_path)


def test_text_token_states_equal_transformers(hf_dir):
    from transformers import CLIPModel
    hf = CLIPModel.from_pretrained(hf_dir, attn_implementation="eager").eval()
    ours = el.ECLIPSE.from_clip(hf_dir, num_frames=4, audio_dim=16).eval()
    ids, mask = ours.tokenize(["a dog barking loudly", "a red square slides in", ""])
    with torch.no_grad():
        states, pooled = ours.text.features(ids, mask)
        assert torch.equal(pooled, ours.text(ids, mask))
        feats = ours.text_features(ids, mask)
        expected = hf.text_model(input_ids=ids, attention_mask=mask).last_hidden_state  # after ln_final
    assert states.shape == feats.tokens.shape == (3, 64, 64)
    assert torch.equal(feats.tokens, states)
    real = mask.bool()
    torch.testing.assert_close(states[real], expected[real], atol=1e-5, rtol=1e-5)
