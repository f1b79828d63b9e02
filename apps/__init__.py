"""The Streamlit app (run with ``streamlit run apps/workbench_app.py``)."""
